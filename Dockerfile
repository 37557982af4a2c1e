# Images for docker-compose.yml. Build stages:
#   temporal  the pinned Temporal CLI (dev server + Web UI), built with go install
#   tmbridge  tmbridge and taskmanager-dev, with python3 for exec handlers
FROM golang:1.26-bookworm AS build-temporal
RUN GOBIN=/out go install github.com/temporalio/cli/cmd/temporal@v1.5.1

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /out/ ./cmd/...

FROM debian:bookworm-slim AS temporal
COPY --from=build-temporal /out/temporal /usr/local/bin/temporal
EXPOSE 7233 8233
ENTRYPOINT ["temporal"]

FROM debian:bookworm-slim AS tmbridge
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /out/ /usr/local/bin/
COPY examples/ examples/
ENTRYPOINT ["tmbridge"]
