# Stub of OE-core's systemd.bbclass: its defaults. check-layer.py checks
# what the real class fails on: every SYSTEMD_SERVICE unit must be installed.
SYSTEMD_PACKAGES ??= "${PN}"
SYSTEMD_AUTO_ENABLE ??= "enable"
