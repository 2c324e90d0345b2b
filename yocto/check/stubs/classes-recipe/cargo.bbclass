# Stub of OE-core's cargo.bbclass for yocto/check/check-layer.py: the real
# class builds with the crates of SRC_URI; this one installs every executable
# of ${B}/target (the checker puts a placeholder binary there), as the real
# cargo_do_install does with cargo's output.
DEPENDS:append = " cargo-native"

cargo_do_install() {
    for f in ${B}/target/*; do
        if [ -f "$f" ] && [ -x "$f" ]; then
            install -d ${D}${bindir}
            install -m 0755 "$f" ${D}${bindir}/
        fi
    done
}

EXPORT_FUNCTIONS do_install
