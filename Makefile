# tsstore: build, test and benchmark. `make help` lists the targets.

CARGO ?= cargo
DATA  ?= ./data
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: help run build test test-engine test-console lint fmt bench fuzz clean
.PHONY: setup setup-yocto yocto-check yocto-image

help:
	@echo "make run    - build and start tsstore with data under $(DATA)"
	@echo "make build  - release build of the binary"
	@echo "make test   - formatting, lints (with and without default features) and all tests"
	@echo "make test-console - the web console's browser tests (Chromium, playwright-core)"
	@echo "make bench  - engine benchmark against a SQLite baseline, then the HTTP server under load, then the streams"
	@echo "make fuzz   - run each fuzz target (open a store, socket lines) for 60 s (needs cargo-fuzz)"
	@echo "make setup  - install the tools the checks below need"
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

setup: setup-yocto

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
