# volback: `make demo` (set up + main job), `make test` (every test).
export PATH := $(PATH):/usr/local/go/bin
GO       ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build deps demo test unit integration lint fuzz bench soak clean

all: build

deps:
	scripts/deps.sh

build:
	$(GO) build -o volback ./cmd/volback

# The main job on the embedded default: a local repository and catalog under
# the volback home (/var/lib/volback for root).
demo: deps build
	VOLBACK=./volback scripts/demo.sh

test: deps lint unit integration fuzz

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration: build
	$(GO) test -count=1 -timeout 20m ./integration/...

fuzz:
	FUZZTIME=$${FUZZTIME:-10s} scripts/fuzz.sh

# The model-based test of the data path for SOAKTIME (default 30m) of
# seeds, and the kill -9 test through the binary with a few more seeds.
soak:
	VOLBACK_MODEL_BUDGET=$${SOAKTIME:-30m} $(GO) test -count=1 -timeout 0 -run 'TestModel$$' -v ./service
	for i in 1 2 3 4 5; do $(GO) test -count=1 -run 'TestKillAtFailpoints|TestModelThroughBinary' ./integration || exit 1; done

# Same workloads through volback, restic, borg and cp; writes docs/BENCHMARKS.md.
bench: deps build
	$(GO) run ./bench -volback ./volback -out docs/BENCHMARKS.md

clean:
	rm -f volback
