# Parley's build. The project needs Go 1.27.3; machines default to an older
# Go with GOTOOLCHAIN=local, so every target asks for the right toolchain,
# which the go command fetches from the module proxy on first use.
export GOTOOLCHAIN := go1.27.3

GO          ?= go
TAGS        := goolm
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)

.PHONY: all build run test fmt-check vet staticcheck unit bench clean

all: build

# The project has no cgo; binaries are built without it. The race
# detector's runtime needs cgo, so the test target turns it on.
build:
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/parley ./cmd/parley

## run: the embedded default — SQLite, local media, in-process everything — in ./data.
run:
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/parley ./cmd/parley
	./bin/parley serve

## test: formatting, vet, staticcheck and the race-enabled test suite.
test: fmt-check vet staticcheck unit

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet -tags $(TAGS) ./...

staticcheck:
	$(GO) run $(STATICCHECK) -tags $(TAGS) ./...

# -count=1: sytest/ builds and runs the parley binary, which the test cache
# cannot see, so a cached pass could hide a change to the server.
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -tags $(TAGS) -timeout 25m ./...

bench:
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin
