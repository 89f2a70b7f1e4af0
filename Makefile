# kvproxy — `make test` is the test command CI runs (.ci/run).
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The build date is the commit time, so rebuilding a commit gives the same binary.
DATE    ?= $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null)
LDFLAGS := -s -w -X github.com/kvproxy/kvproxy/internal/version.Version=$(VERSION) -X github.com/kvproxy/kvproxy/internal/version.Commit=$(COMMIT) -X github.com/kvproxy/kvproxy/internal/version.Date=$(DATE)
ACTIONLINT ?= github.com/rhysd/actionlint/cmd/actionlint@v1.7.12

.PHONY: all build test test-unit test-k8s image release release-check lint fuzz bench bench-e2e soak dev clean

all: lint test

build: ## static binary in bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/kvproxy ./cmd/kvproxy

test: test-unit test-k8s ## everything CI runs

test-unit: ## go vet, then the whole suite with the race detector, then the memory bar without it (-race multiplies memory)
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run '^TestMemoryBoundedUnderLoad$$' -v ./e2e

test-k8s: ## the image, the manifests in deploy/ and the Helm chart (separate Go modules)
	cd tools/imagebuild && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd tools/release && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd deploy/k8stest && $(GO) vet ./... && $(GO) test -count=1 ./...

image: ## OCI image tarball without Docker: dist/kvproxy-image-linux-$(GOARCH).tar (GOARCH=arm64 make image for arm64)
	VERSION=$(VERSION) COMMIT=$(COMMIT) tools/imagebuild/build.sh

release: ## make release VERSION=vX.Y.Z: binaries, archives, image, SBOMs, chart and SHA256SUMS in dist/VERSION/ (RELEASING.md)
	VERSION=$(VERSION) tools/release/release.sh

release-check: ## build the release twice (second time with an empty build cache) and compare every byte; a few minutes
	tools/release/check.sh

lint: ## gofmt, vet, staticcheck, actionlint (installed from the Go module proxy)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	cd tools/imagebuild && $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	cd deploy/k8stest && $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	cd tools/release && $(GO) vet ./... && $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) run $(ACTIONLINT) -no-color

FUZZTIME ?= 15s
fuzz: ## run every fuzz target of every package for FUZZTIME (CI: 3s each, so a new crasher fails the build)
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/dev/null || { $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 1x $$pkg; exit 1; }; \
	  done; \
	done

bench: ## hot-path benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./auth ./proxy ./diagnose ./kvwire

bench-e2e: build ## kvproxy side by side with nginx and a direct client (installs wrk and nginx from Debian when missing; not part of make test)
	@command -v wrk >/dev/null && command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light; }
	$(GO) run ./tools/bench -kvproxy bin/kvproxy $(BENCHFLAGS)

SOAK_DURATION ?= 10m
soak: build ## the real binary at a constant rate with 2-minute tokens for SOAK_DURATION (default 10m): 0 errors, the expected token fetches, no growth (docs/soak.md; not part of make test)
	$(GO) run ./tools/soak -kvproxy bin/kvproxy -duration $(SOAK_DURATION) $(SOAKFLAGS)

dev: ## the local playground
	$(GO) run ./cmd/kvproxy dev

clean:
	rm -rf bin dist
