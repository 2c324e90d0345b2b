# tsstore: build, test and benchmark. `make help` lists the targets.

CARGO ?= cargo
DATA  ?= ./data
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: help run build test test-engine test-console lint fmt bench fuzz clean
.PHONY: setup setup-deb cross deb lint-deb deb-test
.PHONY: setup-yocto yocto-check yocto-image

help:
	@echo "make run    - build and start tsstore with data under $(DATA)"
	@echo "make build  - release build of the binary"
	@echo "make test   - formatting, lints (with and without default features) and all tests"
	@echo "make test-console - the web console's browser tests (Chromium, playwright-core)"
	@echo "make bench  - engine benchmark against a SQLite baseline, then the HTTP server under load, then the streams"
	@echo "make fuzz   - run each fuzz target (open a store, socket lines) for 60 s (needs cargo-fuzz)"
	@echo "make setup  - install the tools of the targets below (apt, rustup, cargo install)"
	@echo "make deb    - Debian packages of the static binaries into $(DIST)/"
	@echo "make lint-deb - lintian on every package in $(DIST)/"
	@echo "make deb-test - install, upgrade and purge the amd64 package in a Debian 12 root (root only)"
	@echo "make yocto-check - offline checks of the Yocto layer (oelint-adv, BitBake's parser, crate list, kas file)"
	@echo "make yocto-image - build the Raspberry Pi 4 SD-card image with kas (needs internet, hours, ~60 GB)"

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

# --- Debian packages (issue 6) ---

DIST ?= dist
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
CROSS_TARGETS ?= x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf

# Every tool the targets below need (idempotent).
setup: setup-deb setup-yocto

# debootstrap and lintian (apt), curl for deb-test, cargo-deb (crates.io).
setup-deb:
	@if ! command -v debootstrap >/dev/null || ! command -v lintian >/dev/null \
	    || ! command -v curl >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			debootstrap lintian curl; \
	fi
	@command -v cargo-deb >/dev/null || $(CARGO) install --locked cargo-deb

# PLACEHOLDER (branch deb): builds the x86_64 binary only. The cross branch's
# `cross` rule (all of $(CROSS_TARGETS)) replaces this one at merge.
cross:
	rustup target add x86_64-unknown-linux-musl
	$(CARGO) build --release --target x86_64-unknown-linux-musl

# One package per architecture from the binaries `make cross` built (already
# stripped by the release profile: --no-strip); cargo-deb names them
# tsstore_<version>-1_<arch>, x86_64 -> amd64, aarch64 -> arm64, armv7 ->
# armhf. amd64 is required; arm64 and armhf are made when their binaries
# exist and skipped with a note if not. Older packages in $(DIST) go first,
# so lint-deb sees only this build's.
deb: cross
	@mkdir -p $(DIST)
	@rm -f $(DIST)/tsstore_*.deb
	@for t in $(CROSS_TARGETS); do \
		bin=$(TARGET_DIR)/$$t/release/tsstore; \
		if [ -x "$$bin" ]; then \
			$(CARGO) deb --no-build --no-strip --target $$t --output $(DIST)/ || exit 1; \
		elif [ "$$t" = x86_64-unknown-linux-musl ]; then \
			echo "deb: $$bin is missing" >&2; exit 1; \
		else \
			echo "deb: skipped $$t: no $$bin (make cross builds it)"; \
		fi; \
	done
	@ls -l $(DIST)/*.deb

# lintian: errors and warnings fail; the overrides
# (packaging/debian/lintian-overrides) each say why (lintian
# --show-overrides lists them, but then fails on them too). Then the unit:
# systemd-analyze verify (on a copy whose ExecStart is the amd64 binary, as
# verify wants the command to exist) and its exposure score (at most 2.0,
# also a test in tests/server/notify.rs).
lint-deb:
	@ls $(DIST)/*.deb >/dev/null
	lintian --fail-on error,warning --display-info $(DIST)/*.deb
	@if command -v systemd-analyze >/dev/null; then \
		d=$$(mktemp -d) && \
		sed 's|^ExecStart=/usr/bin/tsstore|ExecStart=$(abspath $(TARGET_DIR))/x86_64-unknown-linux-musl/release/tsstore|' \
			packaging/systemd/tsstore.service > $$d/tsstore.service && \
		systemd-analyze verify $$d/tsstore.service; rc=$$?; rm -rf $$d; [ $$rc = 0 ] || exit $$rc; \
		echo "systemd-analyze verify: ok"; \
		systemd-analyze security --offline=yes packaging/systemd/tsstore.service \
			| awk '/Overall exposure/ { print; found = 1; if ($$(NF-2) + 0 > 2.0) exit 1 } END { if (!found) exit 1 }'; \
	fi

# The amd64 package installed, upgraded (the same binary as revision 2) and
# purged in a throwaway Debian 12 root; run as root. The pristine root is
# cached in $(TARGET_DIR)/deb-test/.
DEB_TEST_DIR := $(TARGET_DIR)/deb-test
deb-test: deb
	$(CARGO) deb --no-build --no-strip --target x86_64-unknown-linux-musl \
		--deb-revision 2 --output $(DEB_TEST_DIR)/upgrade/
	packaging/debian/deb-test.sh $(DIST)/tsstore_$(VERSION)-1_amd64.deb \
		$(DEB_TEST_DIR)/upgrade/tsstore_$(VERSION)-2_amd64.deb $(DEB_TEST_DIR)
# --- Yocto (yocto/) ---
# The checks' tools (oelint-adv, bitbake-setup for BitBake's parser, kas),
# pinned in yocto/check/requirements.txt, in a venv under the target
# directory; reinstalled when the pins change.
YOCTO_VENV := $(TARGET_DIR)/yocto-venv
YOCTO_PY   := $(YOCTO_VENV)/bin/python
YOCTO_LINT := $(sort $(shell find yocto/meta-tsstore -name '*.bb' -o -name '*.bbappend' -o -name '*.inc' -o -name '*.conf'))

setup-yocto: $(YOCTO_VENV)/.installed

# Debian's python3 makes venvs only with python3-venv installed.
$(YOCTO_VENV)/.installed: yocto/check/requirements.txt
	@python3 -m venv --clear $(YOCTO_VENV) 2>/dev/null || { \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
		&& python3 -m venv --clear $(YOCTO_VENV); }
	$(YOCTO_VENV)/bin/pip install --quiet --disable-pip-version-check -r yocto/check/requirements.txt
	@touch $@

# What a machine without internet can check of the layer; a real build
# (make yocto-image) downloads every source. oelint-adv lints every recipe,
# include and conf file for scarthgap, with one suppression:
# oelint.vars.homepageping fetches HOMEPAGE, and there is no network here
# (the other suppressions are inline, each with its reason). check-layer.py
# parses the layer with BitBake's parser; the unit tests prove the crate-list
# check fails on a stale list; update-crates.py --check compares the list
# with Cargo.lock.
yocto-check: setup-yocto
	@start=$$(date +%s); set -e; \
	echo "== oelint-adv --release scarthgap"; \
	$(YOCTO_VENV)/bin/oelint-adv --quiet --relpaths --release scarthgap --mode all \
		--suppress oelint.vars.homepageping $(YOCTO_LINT); \
	echo "oelint-adv: $(words $(YOCTO_LINT)) files, no findings"; \
	echo "== BitBake's parser: yocto/check/check-layer.py"; \
	$(YOCTO_PY) yocto/check/check-layer.py; \
	echo "== the crate-list check's own tests"; \
	$(YOCTO_PY) -m unittest discover -s yocto/check -p 'test_*.py'; \
	echo "== crate list against Cargo.lock"; \
	$(YOCTO_PY) yocto/update-crates.py --check; \
	echo "yocto-check: passed in $$(( $$(date +%s) - start )) s"

# The SD-card image of yocto/kas/rpi4-64.yml, built from the commit checked
# out here (the recipe fetches it from the repository: push it first). kas
# clones the layers and builds under YOCTO_WORK.
YOCTO_WORK ?= $(abspath $(TARGET_DIR))/yocto
yocto-image: setup-yocto
	@git diff --quiet HEAD -- || echo "warning: uncommitted changes are not in the image: it builds commit $$(git rev-parse --short HEAD)"
	mkdir -p $(YOCTO_WORK)
	TSSTORE_SRCREV=$$(git rev-parse HEAD) KAS_WORK_DIR=$(YOCTO_WORK) $(YOCTO_VENV)/bin/kas build yocto/kas/rpi4-64.yml
