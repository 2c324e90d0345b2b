# Stub of OE-core's useradd.bbclass: its dependencies. check-layer.py checks
# what the real class fails on: each USERADD_PACKAGES entry needs a parameter.
DEPENDS:append = " base-files shadow-native"
USERADD_PACKAGES ??= ""
