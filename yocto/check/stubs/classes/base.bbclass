# Stub of OE-core's base.bbclass (and logging.bbclass) for
# yocto/check/check-layer.py: the logging functions and tasks recipes use.

bbnote() {
    echo "NOTE: $*"
}

bbfatal() {
    echo "ERROR: $*" >&2
    exit 1
}

base_do_install() {
    :
}

addtask fetch
addtask unpack after do_fetch
addtask patch after do_unpack
addtask configure after do_patch
addtask compile after do_configure
addtask install after do_compile
addtask build after do_install

EXPORT_FUNCTIONS do_install
