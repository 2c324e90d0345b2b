# Stub of OE-core's cargo-update-recipe-crates.bbclass: the task that would
# rewrite ${BPN}-crates.inc (yocto/update-crates.py does it offline).
do_update_crates() {
    bbfatal "not available in the stub"
}
addtask update_crates after do_patch
