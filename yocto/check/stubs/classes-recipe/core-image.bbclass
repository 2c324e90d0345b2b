# Stub of OE-core's core-image.bbclass: an image has a rootfs task and the
# packages of IMAGE_INSTALL.
IMAGE_FEATURES ??= ""
CORE_IMAGE_EXTRA_INSTALL ??= ""
do_rootfs() {
    :
}
addtask rootfs before do_build
