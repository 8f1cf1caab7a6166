# sipdispatch — build, run and test. `make help` lists the targets.
GO       ?= go
BIN      ?= bin/sipdispatch
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME ?= 10s
BENCHTIME ?= 1s
PKGS     := ./...

.PHONY: help build run test bench bench-ab bench-cluster fuzz lint cover clean chaos deb

# make deb: the package's version (a v* tag without the v, else 0.0.0~git + commit),
# its architecture and where the .deb goes.
DEB_VERSION ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//' | grep . || echo 0.0.0~git$(COMMIT))
DEB_ARCH    ?= $(shell $(GO) env GOARCH)
DEB_DIR     ?= bin

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build bin/sipdispatch
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/sipdispatch

deb: ## DEB_DIR/sipdispatch_VERSION_ARCH.deb: static binary, hardened systemd unit, /etc defaults (docs/operations.md)
	@mkdir -p $(DEB_DIR)/deb-root
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(DEB_DIR)/deb-root/sipdispatch ./cmd/sipdispatch
	cd docs/deploy/debian && SIPDISPATCH_BIN=$(abspath $(DEB_DIR))/deb-root/sipdispatch DEB_VERSION=$(DEB_VERSION) DEB_ARCH=$(DEB_ARCH) \
	  $(GO) tool nfpm package --config nfpm.yaml --packager deb --target $(abspath $(DEB_DIR))/

run: build ## run one node on the embedded defaults (docs/examples)
	cd docs/examples && exec ../../$(BIN) serve -config sipdispatch.yaml

test: ## vet + every test under the race detector (.ci/setup installs and starts what they need)
	.ci/setup
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

bench: ## benchmarks (numbers go to docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./dispatch/... ./actors/... ./sip/...
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./cluster/ ./cmd/sipdispatch/internal/replica/

bench-ab: build ## SIPp A/B against Kamailio 5.6, one table (SCENARIOS, CALLS, ROUNDS; MODE=step: max rate + PNG plot)
	integration/bench/ab.sh

bench-cluster: build ## SIPp A/B: alg-10 calls through one node alone vs one node of a 3-node cluster (RATE, ROUNDS)
	docs/examples/bench-cluster.sh $(or $(RATE),1000) $(or $(ROUNDS),2)

bench-loadrepl: ## INVITE latency, load_replication sync vs async, 1 and 3 nodes (CALLS per case)
	SIPDISPATCH_MEASURE=$(or $(CALLS),300) $(GO) test -count=1 -run TestMeasureLoadReplicationLatency -v ./integration/

chaos: ## nemesis test (faults under alg-10 calls), DURATION (10m) per seed for each of SEEDS; not part of test
	@mkdir -p $(or $(CHAOSDIR),/tmp/sipdispatch-chaos); failed=""; \
	for s in $(or $(SEEDS),1 2 3 4 5); do \
	  log=$(or $(CHAOSDIR),/tmp/sipdispatch-chaos)/seed-$$s.log; \
	  echo "== seed $$s ($(or $(DURATION),10m)), log in $$log"; \
	  SIPDISPATCH_NEMESIS_SEED=$$s SIPDISPATCH_NEMESIS_DURATION=$(or $(DURATION),10m) \
	    $(GO) test -race -count=1 -timeout 60m -run '^TestClusterNemesisCallLoad$$' -v ./integration/ >$$log 2>&1 || failed="$$failed $$s"; \
	  grep -E 'nemesis summary|leaked:|disagree on|did not settle|^(--- |ok|FAIL)' $$log | sed 's/^ *//'; \
	done; \
	if [ -n "$$failed" ]; then echo "chaos: failed seeds:$$failed"; exit 1; fi; echo "chaos: every seed passed"

.PHONY: soak
soak: build ## SIPp soak, not part of test: stateful alg 10, 400 calls/s held 2 s for DURATION (30m); memory over time, flatness verdict (SD_CONFIG, KAMAILIO=1)
	DURATION=$(or $(DURATION),30m) integration/bench/soak.sh

fuzz: ## a short run of every fuzz target (FUZZTIME each)
	@set -e; for pkg in ./dispatch ./sip ./cluster ./cluster/logstore ./cmd/sipdispatch/internal/replica; do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

lint: ## gofmt, go vet and the import rules of docs/architecture.md
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -count=1 ./integration/imports/

cover: ## coverage report in coverage.html
	$(GO) test -count=1 -coverprofile=coverage.out $(PKGS)
	$(GO) tool cover -func=coverage.out | tail -1
	$(GO) tool cover -html=coverage.out -o coverage.html

clean:
	rm -rf bin coverage.out coverage.html
