# nooelint: oelint.var.suggestedvar.BUGTRACKER, oelint.var.suggestedvar.CVE_PRODUCT, oelint.var.suggestedvar.SECTION
# (The line above: an image, not software; it has no bug tracker, section or CVE product of its own.)
SUMMARY = "A small image that runs tsstore on a gateway"
DESCRIPTION = "core-image-minimal plus tsstore, started by systemd at boot. \
               No SSH server and no root password: add them in your own \
               configuration for development (see the layer's README)."
LICENSE = "MIT"

IMAGE_INSTALL = "packagegroup-core-boot tsstore ${CORE_IMAGE_EXTRA_INSTALL}"
IMAGE_LINGUAS = ""

inherit core-image

# The stores live in /var/lib/tsstore on the root file system, which is not
# grown to the card's size: leave 1 GiB free for them (in KiB).
IMAGE_ROOTFS_EXTRA_SPACE = "1048576"
