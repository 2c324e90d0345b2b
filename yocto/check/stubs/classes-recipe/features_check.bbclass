# Stub of OE-core's features_check.bbclass: REQUIRED_DISTRO_FEATURES only.
python () {
    missing = set((d.getVar("REQUIRED_DISTRO_FEATURES") or "").split()) - set(d.getVar("DISTRO_FEATURES").split())
    if missing:
        raise bb.parse.SkipRecipe("missing required distro feature(s) %s" % " ".join(sorted(missing)))
}
