# volback: `make demo` (set up + main job), `make test` (every test).
export PATH := $(PATH):/usr/local/go/bin
GO       ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Ceph drivers are built with these tags (go-ceph v0.37 needs `pacific` for
# Debian's Ceph 16.2); `go build ./...` without them still builds.
TAGS     ?= ceph,pacific
# The throwaway Ceph cluster of the tests (integration/ceph/start.sh).
CEPH_DIR ?= $(CURDIR)/.ceph
# Runs a command with the test cluster: the one VOLBACK_CEPH_DIR names if
# it is running, else one started now and stopped when the command ends.
WITH_CEPH := integration/ceph/start.sh run $(CEPH_DIR)

# make install: PREFIX and DESTDIR as usual (DESTDIR=/tmp/pkg PREFIX=/usr).
PREFIX   ?= /usr/local
DESTDIR  ?=
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: all build deps demo test unit integration lint fuzz bench bench-ceph bench-scale soak clean gen install ceph-start ceph-stop

all: build

deps:
	scripts/deps.sh

# volback-ceph.so is the Ceph plugin (rados://, rbd://), loaded from beside
# the binary on first use: librados and librbd stay out of other runs.
build:
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o volback ./cmd/volback
	$(GO) build -tags $(TAGS) -buildmode=plugin -o volback-ceph.so ./cmd/volback-ceph

# The man page and completions, written by the binary from its command
# definitions, then checked: the shells parse them, groff renders the page.
gen: build
	mkdir -p build
	./volback man > build/volback.1
	./volback completion bash > build/volback.bash
	./volback completion zsh > build/_volback
	bash -n build/volback.bash
	if command -v zsh >/dev/null; then zsh -n build/_volback; fi
	if command -v groff >/dev/null; then test -z "$$(groff -man -Tutf8 -ww -z build/volback.1 2>&1)"; fi

install: gen
	install -D -m 0755 volback $(DESTDIR)$(PREFIX)/bin/volback
	install -D -m 0644 volback-ceph.so $(DESTDIR)$(PREFIX)/lib/volback/volback-ceph.so
	install -D -m 0644 build/volback.1 $(DESTDIR)$(PREFIX)/share/man/man1/volback.1
	install -D -m 0644 build/volback.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/volback
	install -D -m 0644 build/_volback $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_volback

# The main job on the embedded default: a local repository and catalog under
# the volback home (/var/lib/volback for root).
demo: deps build
	VOLBACK=./volback scripts/demo.sh

# unit and integration share one Ceph cluster, stopped however they end.
test: deps lint gen
	$(WITH_CEPH) $(MAKE) --no-print-directory unit integration
	$(MAKE) --no-print-directory fuzz

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) build ./...
	$(GO) vet ./...
	$(GO) vet -tags $(TAGS) ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags $(TAGS) ./...
	@$(GO) mod tidy -diff >/dev/null || { $(GO) mod tidy -diff; echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; exit 1; }

# VOLBACK_CEPH_REQUIRED=1 turns "no Ceph cluster" from a skip into a failure.
# The rados and rbd packages also run without tags (their stubs' refusals).
unit:
	$(GO) test -count=1 ./drivers/repo/rados/ ./drivers/volume/rbd/
	$(WITH_CEPH) env VOLBACK_CEPH_REQUIRED=1 $(GO) test -tags $(TAGS) -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration: build
	$(WITH_CEPH) env VOLBACK_CEPH_REQUIRED=1 VOLBACK_TAGS=$(TAGS) $(GO) test -count=1 -timeout 20m ./integration/...

# A cluster to keep for a while: `make ceph-start`, `. .ceph/env`, go test
# -tags ceph,pacific ./drivers/repo/rados/ ..., `make ceph-stop`.
ceph-start:
	integration/ceph/start.sh start $(CEPH_DIR)

ceph-stop:
	integration/ceph/start.sh purge $(CEPH_DIR)

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

# W7 (RBD) only, on a throwaway cluster of its own with room for its 4 GiB
# images (memstore keeps them in the OSD's memory: about 10 GiB of RAM);
# add the table to docs/BENCHMARKS.md with BENCH_OUT=docs/BENCHMARKS.md.
bench-ceph: deps build
	VOLBACK_CEPH_DIR= VOLBACK_CEPH_MEMSTORE_BYTES=$$((12 << 30)) integration/ceph/start.sh run $(CURDIR)/.ceph-bench \
		$(GO) run -tags $(TAGS) ./bench -volback ./volback -ceph -only W7 $(if $(BENCH_OUT),-out $(BENCH_OUT))

# The -scale rows (issue 13): W8 (1 TiB sparse, 8 GiB of data), W9 (16 GiB
# dense), the catalog's share, W10 (four 2 GiB at once), with W1, W2, W3
# and W6 of the same run to judge them by; volback only (cp has no
# targets there). Data and repositories under BENCH_WORKDIR (default
# /var/tmp; about 60 GiB free), removed afterwards. Writes the scale
# section of docs/BENCHMARKS.md.
bench-scale: deps build
	$(GO) run ./bench -volback ./volback -scale -rounds 3 -only W1,W2,W3,W6 -tools volback -workdir $${BENCH_WORKDIR:-/var/tmp} -out docs/BENCHMARKS.md

clean:
	rm -rf volback volback-ceph.so build
