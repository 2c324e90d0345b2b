#!/usr/bin/env python3
"""Offline checks of the Yocto layer with BitBake's own parser.

A real Yocto build downloads sources, so it cannot run here. This parses the
layer as BitBake does, with the `bb` module of PyPI's bitbake-setup wheel and
stub classes (yocto/check/stubs/: minimal cargo, systemd, useradd, image...
classes standing in for OE-core's), and checks:

- conf/layer.conf parses, names the layer, its dependency and scarthgap, and
  its BBFILES find every recipe of the layer;
- every recipe parses and expands; tsstore's SRC_URI lists every crate of
  Cargo.lock with its checksum, LIC_FILES_CHKSUM is the LICENSE's md5, PV and
  the minimum Rust are Cargo.toml's, SYSTEMD_SERVICE and USERADD_PARAM are set;
- the recipe skips itself, with a reason, without a commit, with scarthgap's
  own Rust 1.75 and without the systemd distro feature;
- tsstore's do_install runs (the stub cargo class installs a placeholder
  binary) against this checkout's packaging/ files: paths, modes, owners;
- the first-boot key script writes a 64-character key, mode 0600, once;
- the kas file loads with kas's own schema and version check.

What it cannot check: the real OE-core classes, fetching, compiling with the
Yocto Rust toolchain, the image and booting it.

Run by `make yocto-check` with the Python of the yocto venv.
"""

import hashlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
import types
from pathlib import Path

# The wheel ships `bb` without `hashserv` (the hash-equivalence client, a
# separate part of BitBake); bb.siggen imports it, the parser never calls it.
for _name in ("hashserv", "hashserv.client"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

import bb  # noqa: E402 (after the stand-ins above)
import bb.data
import bb.parse
import bb.siggen

HERE = Path(__file__).resolve().parent
YOCTO = HERE.parent
ROOT = YOCTO.parent
LAYER = YOCTO / "meta-tsstore"
STUBS = HERE / "stubs"
KAS = YOCTO / "kas/rpi4-64.yml"
RECIPE_DIR = LAYER / "recipes-tsstore/tsstore"
A_COMMIT = "0123456789abcdef0123456789abcdef01234567"

passed = []
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    (passed if ok else failures).append(what)
    return ok


def load_update_crates():
    spec = importlib.util.spec_from_file_location("update_crates", YOCTO / "update-crates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cargo_toml():
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["package"]


def base_datastore(topdir, **settings):
    """A datastore as the cooker leaves it after the configuration."""
    d = bb.data.init()
    bb.parse.siggen = bb.siggen.init(d)
    d.setVar("BBPATH", f"{STUBS}:{LAYER}")
    d.setVar("TOPDIR", str(topdir))
    d.setVar("__bbclasstype", "global")
    bb.parse.handle("conf/bitbake.conf", d, True)
    d.setVar("LAYERDIR", str(LAYER))
    bb.parse.handle(str(LAYER / "conf/layer.conf"), d, True)
    d.expandVarref("LAYERDIR")  # as the cooker does after each layer.conf
    d.delVar("LAYERDIR")
    for name, value in settings.items():
        d.setVar(name, value)
    bb.parse.BBHandler.inherit("base", "configuration", 0, d)
    d.setVar("__bbclasstype", "recipe")
    return d


def parse(recipe, topdir, **settings):
    d = base_datastore(topdir, **settings)
    return bb.parse.handle(str(recipe), d, 0)[""]


def check_layer_conf(d):
    check(d.getVar("BBFILE_COLLECTIONS").split() == ["tsstore"], "layer.conf: collection tsstore")
    check(d.getVar("LAYERSERIES_COMPAT_tsstore") == "scarthgap", "layer.conf: LAYERSERIES_COMPAT_tsstore = scarthgap")
    check("core" in d.getVar("LAYERDEPENDS_tsstore").split(), "layer.conf: depends on core")
    pattern = re.compile(d.getVar("BBFILE_PATTERN_tsstore"))
    found = sorted({Path(p) for g in d.getVar("BBFILES").split() for p in Path("/").glob(g.lstrip("/"))})
    on_disk = sorted(p for p in LAYER.rglob("*") if p.suffix in (".bb", ".bbappend"))
    check(found == on_disk, f"layer.conf: BBFILES finds the {len(on_disk)} recipes of the layer")
    check(all(pattern.match(str(p)) for p in found), "layer.conf: BBFILE_PATTERN matches them")
    return [p for p in found if p.suffix == ".bb"]


def check_tsstore(recipe, topdir):
    package = cargo_toml()
    rust_ok = {"TSSTORE_SRCREV": A_COMMIT, "RUSTVERSION": "1.91.0%"}
    d = parse(recipe, topdir, **rust_ok)
    if not check(not d.getVar("__SKIPPED"), f"{recipe.name}: parses (skip reason: {d.getVar('__SKIPPED')})"):
        return None
    check(recipe.stem.split("_")[1] == package["version"], f"{recipe.name}: file version is Cargo.toml's {package['version']}")
    check(d.getVar("PV") == package["version"] + "+git", "PV = Cargo.toml version +git")
    check(d.getVar("SRCREV") == A_COMMIT, "SRCREV comes from TSSTORE_SRCREV")
    check(d.getVar("TSSTORE_MIN_RUST") == package["rust-version"], "TSSTORE_MIN_RUST = Cargo.toml rust-version")
    check(d.getVar("LICENSE") == package["license"], "LICENSE = Cargo.toml license")
    md5 = hashlib.md5((ROOT / "LICENSE").read_bytes()).hexdigest()
    check(d.getVar("LIC_FILES_CHKSUM") == f"file://LICENSE;md5={md5}", "LIC_FILES_CHKSUM is the LICENSE file's md5")

    src_uri = d.getVar("SRC_URI").split()
    repo = package["repository"].removeprefix("https://")
    check(src_uri[0] == f"git://{repo}.git;protocol=https;branch=main", "SRC_URI starts with the repository of Cargo.toml")
    crates = load_update_crates().lock_crates(ROOT / "Cargo.lock")
    listed = {u for u in src_uri if u.startswith("crate://")}
    wanted = {f"crate://crates.io/{n}/{v}" for n, v in crates}
    check(listed == wanted, f"SRC_URI lists the {len(wanted)} crates of Cargo.lock, no more "
          f"(missing {len(wanted - listed)}, extra {len(listed - wanted)})")
    wrong = [f"{n}-{v}" for (n, v), sha in crates.items()
             if d.getVarFlag("SRC_URI", f"{n}-{v}.sha256sum") != sha]
    check(not wrong, f"every crate has Cargo.lock's sha256sum (wrong: {wrong[:5]})")

    check(d.getVar("SYSTEMD_SERVICE:tsstore").split() == ["tsstore.service", "tsstore-keygen.service"],
          "SYSTEMD_SERVICE:tsstore = tsstore.service tsstore-keygen.service")
    check(d.getVar("USERADD_PACKAGES") == "tsstore", "USERADD_PACKAGES = tsstore")
    param = d.getVar("USERADD_PARAM:tsstore").split()
    check(param[-1] == "tsstore" and "--system" in param and "--user-group" in param
          and param[param.index("--home-dir") + 1] == "/var/lib/tsstore",
          "USERADD_PARAM:tsstore: system user and group tsstore, home /var/lib/tsstore")
    check(d.getVar("CONFFILES:tsstore") == "/etc/tsstore/config.json", "CONFFILES:tsstore = /etc/tsstore/config.json")
    check(d.getVar("CARGO_PROFILE_RELEASE_STRIP") == "false" and d.getVarFlag("CARGO_PROFILE_RELEASE_STRIP", "export"),
          "cargo's own strip is off (exported)")

    for settings, reason, what in (
            ({"RUSTVERSION": "1.91.0%"}, "TSSTORE_SRCREV", "without a commit"),
            ({"TSSTORE_SRCREV": A_COMMIT}, "meta-lts-mixins", "with scarthgap's Rust 1.75"),
            ({**rust_ok, "DISTRO_FEATURES": "usrmerge"}, "systemd", "without the systemd distro feature")):
        skipped = parse(recipe, topdir, **settings).getVar("__SKIPPED") or ""
        check(reason in str(skipped), f"skipped {what}, naming {reason}: {skipped!r}")
    return d


def run_do_install(d, topdir):
    """Runs do_install as bitbake would, with the checkout as ${S}."""
    work = topdir / "install"
    shutil.rmtree(work, ignore_errors=True)
    build, image, temp, fakebin = (work / n for n in ("build", "image", "temp", "bin"))
    for p in (build / "target", image, temp, fakebin):
        p.mkdir(parents=True)
    binary = build / "target/tsstore"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    for f in (RECIPE_DIR / "files").iterdir():  # do_unpack puts file:// entries in ${WORKDIR}
        shutil.copy(f, work / f.name)
    # The tsstore user exists only in the real sysroot: record ownership changes.
    owners = temp / "owners"
    for tool in ("chown", "chgrp"):
        (fakebin / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >>"{owners}"\n')
        (fakebin / tool).chmod(0o755)
    d = bb.data.createCopy(d)
    for var, value in (("WORKDIR", work), ("S", ROOT), ("B", build), ("D", image), ("T", temp)):
        d.setVar(var, str(value))
    script = temp / "run.do_install"
    with open(script, "w") as f:
        f.write("#!/bin/sh\nset -e\n")
        bb.data.emit_func("do_install", f, d)
        f.write(f'\ncd "{build}"\ndo_install\n')
    env = {**os.environ, "PATH": f"{fakebin}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    if not check(result.returncode == 0, f"do_install runs ({result.stderr.strip()[-300:]})"):
        return
    check_installed(d, image, owners.read_text() if owners.exists() else "")


def check_installed(d, image, owners):
    def mode(rel):
        p = image / rel.lstrip("/")
        return stat.S_IMODE(p.stat().st_mode) if p.exists() else None

    unitdir = d.getVar("systemd_system_unitdir")
    libexec = d.getVar("libexecdir")
    expected = {
        "/usr/bin/tsstore": 0o755,
        f"{unitdir}/tsstore.service": 0o644,
        f"{unitdir}/tsstore-keygen.service": 0o644,
        f"{libexec}/tsstore/keygen": 0o755,
        "/etc/tsstore": 0o750,
        "/etc/tsstore/config.json": 0o640,
        "/var/lib/tsstore": 0o750,
    }
    for path, want in expected.items():
        got = mode(path)
        check(got == want, f"installs {path} mode {want:o} (got {'missing' if got is None else format(got, 'o')})")
    for unit in d.getVar("SYSTEMD_SERVICE:tsstore").split():
        check((image / unitdir.lstrip("/") / unit).exists(), f"SYSTEMD_SERVICE unit {unit} is installed")
    same = all((image / a.lstrip("/")).read_bytes() == (ROOT / b).read_bytes() for a, b in (
        (f"{unitdir}/tsstore.service", "packaging/systemd/tsstore.service"),
        ("/etc/tsstore/config.json", "packaging/systemd/config.json")))
    check(same, "the unit and config.json are the checkout's packaging/systemd files")
    keygen_unit = (image / unitdir.lstrip("/") / "tsstore-keygen.service").read_text()
    check(f"ExecStart={libexec}/tsstore/keygen /etc/tsstore/tsstore.env" in keygen_unit,
          "tsstore-keygen.service runs the installed script on /etc/tsstore/tsstore.env")
    unit = (image / unitdir.lstrip("/") / "tsstore.service").read_text()
    check("EnvironmentFile=-/etc/tsstore/tsstore.env" in unit and "User=tsstore" in unit,
          "tsstore.service reads /etc/tsstore/tsstore.env and runs as tsstore")
    check(f"chgrp tsstore {image}/etc/tsstore {image}/etc/tsstore/config.json" in owners
          and f"chown tsstore:tsstore {image}/var/lib/tsstore" in owners,
          "/etc/tsstore and config.json belong to group tsstore, /var/lib/tsstore to tsstore")


def check_keygen(topdir):
    env_file = topdir / "keygen/tsstore.env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    script = RECIPE_DIR / "files/tsstore-keygen"
    first = subprocess.run(["sh", str(script), str(env_file)], capture_output=True, text=True)
    content = env_file.read_text() if env_file.exists() else ""
    check(first.returncode == 0 and re.fullmatch(r"TSSTORE_ADMIN_KEY=[0-9a-f]{64}\n", content) is not None,
          "tsstore-keygen writes TSSTORE_ADMIN_KEY=<64 hex>")
    check(env_file.exists() and stat.S_IMODE(env_file.stat().st_mode) == 0o600, "the key file has mode 0600")
    check(content.split("=")[1].strip() not in first.stdout + first.stderr, "the key is not printed")
    subprocess.run(["sh", str(script), str(env_file)], check=True, capture_output=True)
    check(env_file.read_text() == content, "a second run keeps the key")
    other = env_file.with_name("other.env")
    subprocess.run(["sh", str(script), str(other)], check=True, capture_output=True)
    check(other.read_text() != content, "another device gets another key")


def check_image(recipe, topdir):
    d = parse(recipe, topdir)
    check(not d.getVar("__SKIPPED"), f"{recipe.name}: parses")
    install = d.getVar("IMAGE_INSTALL").split()
    check("tsstore" in install and "packagegroup-core-boot" in install, "IMAGE_INSTALL has packagegroup-core-boot and tsstore")
    check(d.getVar("EXTRA_IMAGE_FEATURES") in (None, "") and "ssh-server" not in (d.getVar("IMAGE_FEATURES") or ""),
          "no SSH server in the image's features")


def check_kas():
    from kas.includehandler import ConfigFile
    config = ConfigFile.load(str(KAS)).config
    check(True, f"{KAS.relative_to(ROOT)}: valid for kas's schema, format version {config['header']['version']}")
    check((config["machine"], config["distro"], config["target"]) == ("raspberrypi4-64", "poky", "tsstore-image"),
          "kas: machine raspberrypi4-64, distro poky, target tsstore-image")
    repos = config["repos"]
    check(list(repos["tsstore"]["layers"]) == [str(LAYER.relative_to(ROOT))] and "url" not in repos["tsstore"],
          "kas: this repository's layer, by path")
    branches = {name: repo.get("branch") for name, repo in repos.items() if "url" in repo}
    check(branches == {"poky": "scarthgap", "meta-raspberrypi": "scarthgap", "meta-lts-mixins": "scarthgap/rust"},
          f"kas: poky and meta-raspberrypi scarthgap, meta-lts-mixins scarthgap/rust ({branches})")
    local = "\n".join(config["local_conf_header"].values())
    for line in ('INIT_MANAGER = "systemd"', 'LICENSE_FLAGS_ACCEPTED += "synaptics-killswitch"',
                 'IMAGE_FSTYPES = "wic.bz2 wic.bmap"', 'EXTRA_IMAGE_FEATURES = ""'):
        check(line in local.splitlines(), f"kas: local.conf has {line}")
    check("TSSTORE_SRCREV" in config.get("env", {}), "kas: passes TSSTORE_SRCREV through")


def main():
    with tempfile.TemporaryDirectory(prefix="tsstore-yocto-check-") as tmp:
        topdir = Path(tmp)
        recipes = check_layer_conf(base_datastore(topdir))
        for recipe in recipes:
            try:
                if recipe.name.startswith("tsstore_"):
                    d = check_tsstore(recipe, topdir)
                    if d is not None:
                        run_do_install(d, topdir)
                elif recipe.name == "tsstore-image.bb":
                    check_image(recipe, topdir)
                else:
                    check(not parse(recipe, topdir).getVar("__SKIPPED"), f"{recipe.name}: parses")
            except Exception as e:  # a parse error names the file and line
                check(False, f"{recipe.name}: {type(e).__name__}: {e}")
        check_keygen(topdir)
    check_kas()


if __name__ == "__main__":
    main()
    print(f"check-layer: {len(passed)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
