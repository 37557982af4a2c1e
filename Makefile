# tmbridge: `make test` runs every test (building the pinned Temporal CLI
# the first time); `make dev` runs the whole stack on this machine.

TEMPORAL_CLI_VERSION := v1.5.1
STATICCHECK_VERSION := v0.8.2
TEMPORAL_CLI ?= $(HOME)/.cache/tmbridge/temporal-$(TEMPORAL_CLI_VERSION)/temporal
export TMBRIDGE_TEMPORAL_CLI := $(TEMPORAL_CLI)

.PHONY: all build test test-unit test-fuzz test-e2e sim dev bench fuzz fuzz-keep temporal-cli clean

all: build

build:
	go build -buildvcs=auto -o bin/ ./cmd/...

# The pinned Temporal CLI (dev server + Temporal Web), built from source with
# `go install`: about 6-9 minutes the first time, then cached.
temporal-cli: $(TEMPORAL_CLI)
$(TEMPORAL_CLI):
	@echo ">> building the Temporal CLI $(TEMPORAL_CLI_VERSION) into $(dir $@) (first time only)"
	GOBIN=$(dir $@) go install github.com/temporalio/cli/cmd/temporal@$(TEMPORAL_CLI_VERSION)

# Every test: vet and staticcheck, unit and workflow tests with the race detector, each
# fuzz target for 3000 inputs, then the end-to-end suite against a real
# Temporal dev server and, beside it, the fault simulation on its
# regression seeds and seeds 1-5.
test: test-unit test-fuzz test-e2e

test-unit:
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	go test -race -short -count=1 ./...

# The end-to-end suite and the simulation run side by side (both mostly
# wait on timers and servers), the simulation three seeds at a time; and
# the tests of how the dev servers they use are started.
test-e2e: $(TEMPORAL_CLI)
	go test -count=1 -timeout 14m -parallel $(SIM_PARALLEL) ./e2e/ ./e2e/sim/ ./internal/devtemporal/

# The fault simulation on many seeds: `make sim SEEDS=500` (from FIRST=1);
# `make sim SEED=42` replays one.
# SIM_PARALLEL seeds run at a time, each with servers of its own.
SEEDS ?= 20
FIRST ?= 1
SIM_PARALLEL ?= 3
sim: $(TEMPORAL_CLI)
	SIM_SEEDS=$(SEEDS) SIM_FIRST_SEED=$(FIRST) SIM_SEED=$(SEED) go test -count=1 -timeout 0 -parallel $(SIM_PARALLEL) -v -run TestSimulation ./e2e/sim/

# One table, side by side on one dev server: plain Temporal (regular and
# local activities, each with and without eager start) and tmbridge
# (default and short-handler options), 200 one-second tasks, 1,000 tasks
# in flight (peak RSS), an idle bridge. Also written to bench.md.
bench: $(TEMPORAL_CLI)
	TMBRIDGE_BENCH=1 TMBRIDGE_BENCH_OUT=$(CURDIR)/bench.md go test -count=1 -timeout 30m -run '^TestBenchTable$$' -v ./e2e/

# Fuzz targets (package:Target). Their corpus is kept in each package's
# testdata/fuzz, which plain `go test` replays; `make test` fuzzes each
# for 3000 inputs, `make fuzz` for FUZZTIME each (FUZZ=Target for one).
FUZZ_TARGETS := ./bridge:FuzzLoad ./workflows:FuzzRender ./workflows:FuzzDurations_round_trip ./taskmanager:FuzzDecode \
	./taskmanager:FuzzParseRetryAfter ./taskmanager:FuzzStoredResultSize
FUZZTIME ?= 2m
FUZZ ?= .
# A count, not a time: a time-bound run fails ("context deadline exceeded")
# when a slow machine has not replayed the corpus by then.
test-fuzz:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=3000x
fuzz:
	@set -e; ran=0; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "$$name" | grep -q -- "$(FUZZ)" || continue; \
		echo ">> fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; ran=1; \
	done; [ $$ran = 1 ] || { echo "no fuzz target matches FUZZ=$(FUZZ)"; exit 1; }
# Keep what fuzzing found interesting (in Go's cache) as the repo's corpus.
fuzz-keep:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		from=$$(go env GOCACHE)/fuzz/$$(go list $$pkg)/$$name; \
		[ -d $$from ] || continue; mkdir -p $$pkg/testdata/fuzz/$$name; \
		for f in $$from/*; do [ -e $$pkg/testdata/fuzz/$$name/$${f##*/} ] || cp $$f $$pkg/testdata/fuzz/$$name/; done; \
		echo "$$pkg/testdata/fuzz/$$name: $$(ls $$pkg/testdata/fuzz/$$name | wc -l) inputs"; \
	done

# The whole stack: Temporal dev server with Web UI, taskmanager-dev seeded
# with example tasks, and tmbridge. Ctrl-C stops it all.
dev: $(TEMPORAL_CLI) build
	TEMPORAL_CLI=$(TEMPORAL_CLI) ./scripts/dev.sh

clean:
	rm -rf bin
