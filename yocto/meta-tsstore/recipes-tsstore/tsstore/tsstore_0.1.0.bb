# nooelint: oelint.var.bbclassextend
# (The line above: a service for the target only; no -native or nativesdk variant makes sense.)
SUMMARY = "Embedded time-series store with a fixed storage footprint"
DESCRIPTION = "tsstore keeps the newest readings of a gateway in a circular \
               buffer of fixed-size blocks on disk and serves them over REST, \
               WebSocket, a Unix socket and a web console, from one binary."
HOMEPAGE = "https://github.com/tsstore/tsstore"
BUGTRACKER = "https://github.com/tsstore/tsstore/issues"
SECTION = "database"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=1836efb2eb779966696f473ee8540542"
CVE_PRODUCT = "tsstore"

PV .= "+git"

SRC_URI = "git://github.com/tsstore/tsstore.git;protocol=https;branch=main \
           file://tsstore-keygen \
           file://tsstore-keygen.service \
           "

# The commit to build. tsstore-crates.inc lists the crates of one Cargo.lock,
# so SRCREV must be the commit this layer was taken from (the layer lives in
# the tsstore repository, and `make yocto-check` keeps the list equal to that
# commit's Cargo.lock). Set TSSTORE_SRCREV (the kas file passes it through
# from the environment) or SRCREV:pn-tsstore; the recipe is skipped, saying
# so, while neither is set. See the layer's README.
TSSTORE_SRCREV ??= ""
SRCREV = "${TSSTORE_SRCREV}"

S = "${WORKDIR}/git"

require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates systemd useradd features_check

# It runs as a systemd service (Type=notify, watchdog, hardening).
REQUIRED_DISTRO_FEATURES = "systemd"

# The release profile strips the binary; leave that to the packaging, which
# keeps the debug symbols in ${PN}-dbg (and avoids the already-stripped QA).
export CARGO_PROFILE_RELEASE_STRIP = "false"

# Cargo.toml's rust-version; scarthgap itself ships Rust 1.75.
TSSTORE_MIN_RUST = "1.85"

# Skipping the recipe with a reason needs parse-time code: a missing commit or
# too old a Rust would otherwise fail late, in do_fetch or do_compile.
# nooelint: oelint.task.noanonpython
python () {
    srcrev = d.getVar("SRCREV")
    if not srcrev or srcrev == "INVALID":
        raise bb.parse.SkipRecipe("no commit to build: set TSSTORE_SRCREV to the commit of the tsstore "
                                  "repository this layer comes from (git rev-parse HEAD)")
    rust = (d.getVar("RUSTVERSION") or "").rstrip("%")
    minimum = d.getVar("TSSTORE_MIN_RUST")
    if rust and bb.utils.vercmp_string_op(rust, minimum, "<"):
        raise bb.parse.SkipRecipe("needs Rust %s or newer, RUSTVERSION is %s: add the meta-lts-mixins "
                                  "layer, branch scarthgap/rust" % (minimum, rust))
}

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --user-group --home-dir ${localstatedir}/lib/tsstore \
                       --no-create-home --shell ${base_sbindir}/nologin tsstore"

SYSTEMD_SERVICE:${PN} = "tsstore.service tsstore-keygen.service"

CONFFILES:${PN} = "${sysconfdir}/tsstore/config.json"

# The unit and the config come from the source tree, as in the Debian
# package: one copy of each. The unit names the paths below.
do_install:append() {
    grep -qx 'ExecStart=${bindir}/tsstore serve' ${S}/packaging/systemd/tsstore.service ||
        bbfatal "tsstore.service does not start ${bindir}/tsstore"
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/packaging/systemd/tsstore.service ${D}${systemd_system_unitdir}/
    sed -e 's,@libexecdir@,${libexecdir},g' ${WORKDIR}/tsstore-keygen.service \
        >${D}${systemd_system_unitdir}/tsstore-keygen.service
    chmod 0644 ${D}${systemd_system_unitdir}/tsstore-keygen.service
    install -d ${D}${libexecdir}/tsstore
    install -m 0755 ${WORKDIR}/tsstore-keygen ${D}${libexecdir}/tsstore/keygen

    # /etc/tsstore: readable by the service's group; tsstore.env (the admin
    # key, root only) is written on the device at first boot.
    install -d -m 0750 ${D}${sysconfdir}/tsstore
    install -m 0640 ${S}/packaging/systemd/config.json ${D}${sysconfdir}/tsstore/config.json
    chgrp tsstore ${D}${sysconfdir}/tsstore ${D}${sysconfdir}/tsstore/config.json

    # The stores (StateDirectory= would create it too, at the first start).
    install -d -m 0750 ${D}${localstatedir}/lib/tsstore
    chown tsstore:tsstore ${D}${localstatedir}/lib/tsstore
}
