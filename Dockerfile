# tmbridge's image. Temporal itself comes from Temporal's published images
# (see docker-compose.yml): nothing of Temporal is built here.
#
# Targets:
#   tmbridge (the default, the last stage)
#       tmbridge and taskmanager-dev on Debian slim with python3, because
#       examples/tmbridge.yaml runs a Python exec handler; user 10001.
#   tmbridge-distroless
#       the same static binaries on distroless, user 65532 (nonroot): no
#       shell, no python3, for configs whose handlers are Go or http only.
#
#   docker build -t tmbridge .
#   docker build --target tmbridge-distroless -t tmbridge:distroless .

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo), no local paths (-trimpath), no symbol tables (-s -w).
# The version and commit of `tmbridge --version` and tmbridge_build_info
# come from the module's VCS stamp (the build context keeps .git for that,
# see .dockerignore); --build-arg VERSION=v1.2.3 sets the version instead.
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w${VERSION:+ -X github.com/prismq/tmbridge/bridge.version=$VERSION}" \
      -o /out/ ./cmd/...

# distroless publishes no version tags: pin it by digest in your own build
# (gcr.io/distroless/static-debian12:nonroot@sha256:...).
FROM gcr.io/distroless/static-debian12:nonroot AS tmbridge-distroless
COPY --from=build /out/tmbridge /out/taskmanager-dev /usr/local/bin/
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["tmbridge"]

FROM debian:12.12-slim AS tmbridge
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tmbridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tmbridge
WORKDIR /app
COPY --from=build /out/tmbridge /out/taskmanager-dev /usr/local/bin/
# The example config's exec handler runs examples/handlers/wordcount.py,
# relative to this directory. Owned by root: the bridge only reads them.
COPY examples/ examples/
# A numeric user, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["tmbridge"]
