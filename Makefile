# tsstore: build, test and benchmark. `make help` lists the targets.

CARGO ?= cargo
DATA  ?= ./data
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: help run build test test-engine test-console lint fmt bench fuzz clean \
	setup setup-image image image-test

help:
	@echo "make run    - build and start tsstore with data under $(DATA)"
	@echo "make build  - release build of the binary"
	@echo "make test   - formatting, lints (with and without default features) and all tests"
	@echo "make test-console - the web console's browser tests (Chromium, playwright-core)"
	@echo "make bench  - engine benchmark against a SQLite baseline, then the HTTP server under load, then the streams"
	@echo "make fuzz   - run each fuzz target (open a store, socket lines) for 60 s (needs cargo-fuzz)"
	@echo "make setup  - install the host tools the targets below need (Debian packages, as root)"
	@echo "make image  - the SD-card image for 64-bit Raspberry Pi boards: $(IMAGE)"
	@echo "make image-test - check the image and boot it twice under qemu-system-aarch64"

# Starts the server on port 21080 with data under $(DATA). Without
# TSSTORE_ADMIN_KEY, an admin key is generated once, kept in
# $(DATA)/.admin_key (mode 0600) and printed.
run:
	@mkdir -p $(DATA)
	@if [ -z "$$TSSTORE_ADMIN_KEY" ] && [ ! -s $(DATA)/.admin_key ]; then \
		(umask 077; od -An -tx1 -N24 /dev/urandom | tr -d ' \n' > $(DATA)/.admin_key); \
	fi
	@KEY="$${TSSTORE_ADMIN_KEY:-$$(cat $(DATA)/.admin_key)}"; \
		echo "tsstore admin key: $$KEY"; \
		TSSTORE_ADMIN_KEY="$$KEY" $(CARGO) run --release -- serve --data-path $(DATA) --socket $(DATA)/tsstore.sock

build:
	$(CARGO) build --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --no-default-features -- -D warnings

# The engine must build without the server feature (no tokio, no axum).
test: lint test-console
	$(CARGO) build --no-default-features
	$(CARGO) test

# The web console in a real browser: Debian's Chromium driven by
# playwright-core (tests/console/), against the debug binary. Installs
# chromium (apt) and the npm package when missing. Screenshots go to
# target/console-screenshots/.
CHROMIUM ?= /usr/bin/chromium
test-console:
	@if [ ! -x $(CHROMIUM) ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi
	@if [ ! -d tests/console/node_modules/playwright-core ]; then \
		cd tests/console && npm ci --no-audit --no-fund; \
	fi
	$(CARGO) build
	cd tests/console && CHROMIUM=$(CHROMIUM) TSSTORE_BIN="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug/tsstore" \
		node --test console.test.mjs

fmt:
	$(CARGO) fmt --all

# The engine first, then the HTTP server (benches/http.rs starts the
# binary built for the bench profile and loads it over loopback).
bench:
	$(CARGO) bench --bench engine
	$(CARGO) bench --bench http
	$(CARGO) bench --bench stream

fuzz:
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run open_store -- -max_total_time=60
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ingest_line -- -max_total_time=60

clean:
	$(CARGO) clean

setup: setup-image

# The SD-card image (packaging/image/): Debian bookworm arm64 with the
# Raspberry Pi firmware and $(DEB) installed with dpkg. Run as root. The
# base root file system (debootstrap and packages, the slow part under
# emulation) is cached in $(TARGET_DIR)/image-cache/.
DEB   ?= dist/tsstore_$(VERSION)-1_arm64.deb
IMAGE := dist/tsstore-rpi-arm64.img.xz
IMAGE_TOOLS := $(TARGET_DIR)/image-tools

setup-image:
	packaging/image/setup.sh $(IMAGE_TOOLS)

# Rebuilt when the package or anything the image is made of changes.
IMAGE_INPUTS := $(shell find packaging/image packaging/systemd -type f \
	! -path '*/test/*' ! -name test.sh ! -name setup.sh)
image: $(IMAGE)
$(IMAGE): $(DEB) $(IMAGE_INPUTS)
	packaging/image/build-image.sh $(DEB) $(IMAGE) $(TARGET_DIR)/image-cache $(TARGET_DIR)/image-work

image-test: image
	packaging/image/test.sh $(IMAGE) $(TARGET_DIR)/image-work $(IMAGE_TOOLS)
