# tsstore: build, test and benchmark. `make help` lists the targets.

CARGO ?= cargo
DATA  ?= ./data
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: help run build test test-engine test-console setup-mqtt check-modules lint fmt bench fuzz clean
.PHONY: setup setup-check setup-cross cross cross-test
.PHONY: setup-deb deb lint-deb deb-test
.PHONY: setup-yocto yocto-check yocto-image
.PHONY: setup-image image image-test
.PHONY: setup-oci oci oci-test

help:
	@echo "make run    - build and start tsstore with data under $(DATA)"
	@echo "make build  - release build of the binary"
	@echo "make test   - formatting, lints (with and without default features) and all tests"
	@echo "make test-console - the web console's browser tests (Chromium, playwright-core)"
	@echo "make setup-mqtt - install mosquitto and its clients for the MQTT tests (Debian, as root)"
	@echo "make check-modules - the top-level modules of src/, and the files of src/store/, form no cycle; the areas never import each other"
	@echo "make bench  - engine benchmark against a SQLite baseline, then the HTTP server under load, the streams, MQTT through a local mosquitto, aggregated range queries, the cost of alert rules per insert, and a 1,000,000-object CSV export"
	@echo "make fuzz   - run each fuzz target (open a store, socket lines) for 60 s (needs cargo-fuzz)"
	@echo "make setup  - install what the builds below need (Debian, as root); idempotent"
	@echo "make setup-check - check in seconds that every tool of the targets below is installed (names the missing packages)"
	@echo "make setup-cross - rustup targets, ARM cross compilers, zig and qemu-user for the cross builds"
	@echo "make cross  - static release binaries for $(CROSS_TARGETS), copied to dist/"
	@echo "make cross-test - the engine tests and a set of server tests built for aarch64 and armv7, run under qemu-user"
	@echo "make deb    - Debian packages of the static binaries into $(DIST)/"
	@echo "make lint-deb - lintian on every package in $(DIST)/"
	@echo "make deb-test - install, upgrade and purge the amd64 package in a Debian 12 root (root only)"
	@echo "make yocto-check - offline checks of the Yocto layer (oelint-adv, BitBake's parser, crate list, kas file)"
	@echo "make yocto-image - build the Raspberry Pi 4 SD-card image with kas (needs internet, hours, ~60 GB)"
	@echo "make image  - the SD-card image for 64-bit Raspberry Pi boards: $(IMAGE)"
	@echo "make image-test - check the image and boot it twice under qemu-system-aarch64"
	@echo "make oci    - container images (linux/amd64, arm64, arm/v7) of make cross's binaries as OCI archives in dist/"
	@echo "make oci-test - run the images under Podman and compose.yaml under podman-compose"

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

# The import graph of the top-level modules of src/: no cycle, the areas
# (api, stream, ingest, console) never import each other, the engine
# imports nothing of the server, and the files of src/store/ import each
# other without a cycle. The self-test proves the check fails on a tree
# with a cycle.
check-modules:
	python3 tests/module_graph.py --self-test
	python3 tests/module_graph.py src

# The engine must build without the server feature (no tokio, no axum).
test: lint check-modules setup-mqtt test-console
	$(CARGO) build --no-default-features
	$(CARGO) test

# The web console in a real browser: Debian's Chromium driven by
# playwright-core (tests/console/), against the debug binary, and a
# mosquitto the MQTT test starts itself. Installs chromium, mosquitto (apt)
# and the npm package when missing. Screenshots go to
# target/console-screenshots/.
CHROMIUM ?= /usr/bin/chromium
test-console: setup-mqtt
	@if [ ! -x $(CHROMIUM) ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi
	@if [ ! -d tests/console/node_modules/playwright-core ]; then \
		cd tests/console && npm ci --no-audit --no-fund; \
	fi
	$(CARGO) build
	cd tests/console && CHROMIUM=$(CHROMIUM) TSSTORE_BIN="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug/tsstore" \
		node --test console.test.mjs

# The broker and clients of the MQTT tests (tests/server/mosquitto.rs
# starts its own broker on a free loopback port), installed when missing.
setup-mqtt:
	@$(call apt_install_missing,mosquitto mosquitto-clients)

fmt:
	$(CARGO) fmt --all

# The engine first, then the HTTP server (benches/http.rs starts the
# binary built for the bench profile and loads it over loopback), the
# streams, and MQTT both ways through a local mosquitto (benches/mqtt.rs).
bench:
	$(CARGO) bench --bench engine
	$(CARGO) bench --bench http
	$(CARGO) bench --bench stream
	$(CARGO) bench --bench mqtt
	$(CARGO) bench --bench agg
	$(CARGO) bench --bench export

fuzz:
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run open_store -- -max_total_time=60
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ingest_line -- -max_total_time=60

clean:
	$(CARGO) clean

# --- Gateways: static musl binaries for ARM ---------------------------------
#
# Every setup-* step is idempotent and installs only what is missing;
# `setup` gathers them.

# Installs those of the Debian packages $(1) that are not installed, without
# their recommendations (name every package a target needs).
apt_install_missing = PKGS=""; for p in $(1); do \
		dpkg -s $$p >/dev/null 2>&1 || PKGS="$$PKGS $$p"; \
	done; \
	if [ -n "$$PKGS" ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$PKGS; \
	fi
setup: setup-cross setup-deb setup-yocto setup-image setup-oci

# Every tool the targets below call, and each cross target's C compiler
# compiling a file that includes <stdint.h>: a missing package fails here
# in seconds, with its name (packaging/setup-check.sh).
setup-check:
	@CROSS_TARGETS="$(CROSS_TARGETS)" ZIG_TARGETS="$(ZIG_TARGETS)" SYSROOT="$(SYSROOT)" \
		YOCTO_VENV="$(YOCTO_VENV)" IMAGE_TOOLS="$(IMAGE_TOOLS)" packaging/setup-check.sh

CROSS_TARGETS := x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
# The targets the tests run on under qemu-user (x86_64 musl is the host's
# own architecture: `make test` covers its code).
CROSS_TEST_TARGETS := aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
# Linked by zig (cargo-zigbuild), which brings its own musl CRT and libc
# for them; rust-lld and the host cc link the others (.cargo/config.toml).
ZIG_TARGETS := armv7-unknown-linux-musleabihf
# Pinned so every machine links with the same zig.
ZIG_PIP := ziglang==0.17.1 cargo-zigbuild==0.24.1
# The qemu command of each test target, as cargo's `runner` in
# .cargo/config.toml; the tests also prefix the binaries they spawn with
# it (TSSTORE_TEST_RUNNER, see tests/tests.rs).
QEMU_aarch64-unknown-linux-musl := qemu-aarch64-static
QEMU_armv7-unknown-linux-musleabihf := qemu-arm-static -cpu cortex-a7

# rustup has no prebuilt std for some targets on some mirrors (armv7 musl
# here): those build std from source (rust-src; RUSTC_BOOTSTRAP lets the
# stable toolchain take -Z, and only those builds get it, as some build
# scripts turn on nightly-only code when they see it).
# A std is there when its rlib is: this also sees a std that rustup did not
# install itself (a distro toolchain, a half-registered component).
SYSROOT = $(shell rustc --print sysroot)
have_std = $(wildcard $(SYSROOT)/lib/rustlib/$(1)/lib/libstd-*.rlib)
BUILD_STD := -Zbuild-std=std,panic_abort
cross_env = $(if $(call have_std,$(1)),,RUSTC_BOOTSTRAP=1)
cross_build = $(if $(filter $(1),$(ZIG_TARGETS)),cargo-zigbuild zigbuild,$(CARGO) build)
cross_test = $(if $(filter $(1),$(ZIG_TARGETS)),cargo-zigbuild test,$(CARGO) test)
cross_std = $(if $(call have_std,$(1)),,$(BUILD_STD))
# Builds with std from source run with RUSTC_BOOTSTRAP=1, which build
# scripts and proc-macros see: they get a target directory of their own, or
# they and the other targets' builds would keep rebuilding each other's
# host artifacts. The binary is copied to where the others are.
STD_TARGET_DIR := $(TARGET_DIR)/build-std

# The Debian packages of the cross builds. apt runs with
# --no-install-recommends, so a package another one only recommends is
# named here: libc6-dev-arm64-cross (the aarch64 libc headers ring's C
# includes; gcc-aarch64-linux-gnu merely recommends it). musl-tools brings
# x86_64-linux-musl-gcc, the compiler cc-rs looks for on that target.
# `make setup-check` compiles with each of them.
CROSS_PKGS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross musl-tools qemu-user-static file

setup-cross:
	@set -e; for t in $(CROSS_TARGETS); do \
		ls $(SYSROOT)/lib/rustlib/$$t/lib/libstd-*.rlib >/dev/null 2>&1 && continue; \
		case " $(ZIG_TARGETS) " in \
		*" $$t "*) rustup target add $$t || echo "no prebuilt std for $$t: make cross builds it from source";; \
		*) rustup target add $$t;; \
		esac; \
	done
	rustup component add rust-src
	@$(call apt_install_missing,$(CROSS_PKGS) $$(python3 -m pip --version >/dev/null 2>&1 || echo python3-pip))
	@# zig and cargo-zigbuild are prebuilt wheels on PyPI (no compile).
	@if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -m ziglang version >/dev/null 2>&1; then \
		python3 -m pip install --break-system-packages $(ZIG_PIP); \
	fi

# Release builds (profile.release: lto, one codegen unit, stripped) to
# $(TARGET_DIR)/<triple>/release/tsstore, where `cargo deb --no-build
# --target <triple>` finds them, and copies in dist/. Each is checked:
# static (a gateway's minimal image may have no loader), and without
# aws-lc-rs (rustls uses ring: aws-lc-rs needs cmake and a C toolchain per
# target and adds megabytes).
cross: $(CROSS_TARGETS:%=cross-build-%)
	@ls -l $(CROSS_TARGETS:%=dist/tsstore-%)

cross-build-%:
	@if $(CARGO) tree -q -e normal --target $* -i aws-lc-rs >/dev/null 2>&1; then \
		echo "aws-lc-rs is in the tree for $* (rustls must use ring)"; exit 1; \
	fi
	$(call cross_env,$*) $(call cross_build,$*) --release --target $* $(call cross_std,$*) \
		$(if $(call have_std,$*),,--target-dir $(STD_TARGET_DIR))
	@$(if $(call have_std,$*),true,mkdir -p $(TARGET_DIR)/$*/release && \
		cp $(STD_TARGET_DIR)/$*/release/tsstore $(TARGET_DIR)/$*/release/tsstore)
	@mkdir -p dist
	cp $(TARGET_DIR)/$*/release/tsstore dist/tsstore-$*
	@f="$$(file -L dist/tsstore-$*)"; echo "$$f"; \
	case "$$f" in *"dynamically linked"*) echo "dist/tsstore-$* is not static"; exit 1;; esac

# The tests on the gateways' CPUs, under qemu-user: the unit tests, every
# engine integration test (format, crash, model, kill), and server tests
# that start the real binary (also under qemu) and cover HTTP, HTTPS
# (ring's assembly), the Unix socket, argon2 keys, signals, a restart, and
# an MQTT sink and subscription over TLS (rumqttc on ring, against the
# host's mosquitto).
# The rest of the server suite (about 80 tests) would add minutes of
# emulation for little more target coverage: its logic is the same on
# every CPU and `make test` runs it. Profile cross-test (Cargo.toml):
# opt-level 1 for the emulated proptest and crash loops.
CROSS_TEST_SERVER := \
	server::http::insert_and_read_each_data_type \
	server::http::restart_keeps_stores_keys_schema_and_data \
	server::http::https_with_a_self_signed_certificate \
	server::http::sigterm_lets_inflight_requests_finish \
	server::unix::every_kind_of_line_gets_its_answer \
	server::cli::create_prints_the_key_once_and_the_server_accepts_it \
	server::mqtt_sink::tls_with_the_ca_file_from_the_ca_directory \
	server::mqtt_sub::tls_with_a_ca_file_from_the_ca_directory

# Cases per crash test under qemu (the native default is 200 per test and
# 1,600 per leftovers test, over 5,000 cuts in all; the minimum cuts each
# test asserts scale with it): the native debug run of the full count
# takes about 40 s here, so a tenth of the default tests' cases keeps the
# emulated run well under the two minutes per target. `make test` runs
# the full count.
CROSS_CRASH_CASES ?= 20

cross-test: setup-mqtt $(CROSS_TEST_TARGETS:%=cross-test-%)

# Each run under qemu-user gets a deadline (tests/deadline.sh): a hang
# fails its step with the process tree printed, instead of using up the CI
# run. The quiet 2-core machine runs the longest step (the armv7 engine
# tests) in about 2 minutes.
CROSS_TEST_DEADLINE ?= 900

# The tests that start processes (the kill test's children, the servers,
# mosquitto) run one at a time: qemu-user 7.2 can deadlock in a process
# forked by a guest that has many threads running, which hung a CI run in
# the kill test's spawn. The others run in parallel.
cross-test-%:
	$(call cross_env,$*) $(call cross_test,$*) \
		--profile cross-test --target $* $(call cross_std,$*) --lib --test tests --no-run
	$(call cross_env,$*) TSSTORE_TEST_RUNNER="$(QEMU_$*)" tests/deadline.sh $(CROSS_TEST_DEADLINE) \
		$(call cross_test,$*) --profile cross-test --target $* $(call cross_std,$*) --lib
	$(call cross_env,$*) TSSTORE_TEST_RUNNER="$(QEMU_$*)" TSSTORE_CRASH_CASES=$(CROSS_CRASH_CASES) \
		tests/deadline.sh $(CROSS_TEST_DEADLINE) \
		$(call cross_test,$*) --profile cross-test --target $* $(call cross_std,$*) --test tests \
		-- engine:: --skip engine::kill
	$(call cross_env,$*) TSSTORE_TEST_RUNNER="$(QEMU_$*)" tests/deadline.sh $(CROSS_TEST_DEADLINE) \
		$(call cross_test,$*) --profile cross-test --target $* $(call cross_std,$*) --test tests \
		-- --test-threads 1 engine::kill $(CROSS_TEST_SERVER)

# --- Debian packages ---------------------------------------------------------

DIST ?= dist

# debootstrap and lintian (apt), curl for deb-test, cargo-deb (crates.io).
setup-deb:
	@if ! command -v debootstrap >/dev/null || ! command -v lintian >/dev/null \
	    || ! command -v curl >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			debootstrap lintian curl; \
	fi
	@command -v cargo-deb >/dev/null || $(CARGO) install --locked cargo-deb

# One package per architecture from the binaries `make cross` built (already
# stripped by the release profile: --no-strip); cargo-deb names them
# tsstore_<version>-1_<arch>, x86_64 -> amd64, aarch64 -> arm64, armv7 ->
# armhf. Older packages in $(DIST) go first, so lint-deb sees only this
# build's.
deb: cross
	@mkdir -p $(DIST)
	@rm -f $(DIST)/tsstore_*.deb
	@set -e; for t in $(CROSS_TARGETS); do \
		$(CARGO) deb --no-build --no-strip --target $$t --output $(DIST)/; \
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

# --- The SD-card image -----------------------------------------------------

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
# The arm64 package comes from `make deb` (which builds every package).
$(DEB): deb
$(IMAGE): $(DEB) $(IMAGE_INPUTS)
	packaging/image/build-image.sh $(DEB) $(IMAGE) $(TARGET_DIR)/image-cache $(TARGET_DIR)/image-work

image-test: image
	packaging/image/test.sh $(IMAGE) $(TARGET_DIR)/image-work $(IMAGE_TOOLS)

# --- Container images (Dockerfile, compose.yaml, packaging/oci/) ------------

# podman builds the images (its built-in buildah, no daemon) and runs the
# tests with runc (crun fails on hosts with a hybrid cgroup v1 layout);
# netavark and iptables publish ports; podman-compose runs compose.yaml.
OCI_PKGS := podman runc netavark iptables podman-compose

setup-oci:
	@$(call apt_install_missing,$(OCI_PKGS))

# The images of the Dockerfile for linux/amd64, linux/arm64 and linux/arm/v7
# from make cross's static binaries (the final stage only copies them, so
# no emulation), as OCI archives in dist/ with a multi-arch index
# (packaging/oci/build.sh). Each image is at most 8 MB.
OCI_WORK := $(TARGET_DIR)/oci
oci: cross
	packaging/oci/build.sh $(VERSION) dist $(OCI_WORK)

# The archives loaded into a throwaway Podman storage and run: the amd64
# image with a volume and a loopback port (stores, keys, HTTP, restarts,
# health check, user), the ARM images' binaries, and compose.yaml under
# podman-compose (packaging/oci/test.sh).
oci-test: oci
	packaging/oci/test.sh $(VERSION) dist $(OCI_WORK)/test
