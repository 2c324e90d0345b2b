"""Tests of yocto/update-crates.py, above all of `--check`: the check that
fails when someone changes Cargo.lock and forgets to regenerate the recipe's
crate list. Each test runs the script as `make yocto-check` does, against a
modified copy of the lock file.

    python3 -m unittest discover -s yocto/check -p 'test_*.py'
"""

import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

YOCTO = Path(__file__).resolve().parent.parent
SCRIPT = YOCTO / "update-crates.py"
LOCK = YOCTO.parent / "Cargo.lock"
INC = YOCTO / "meta-tsstore/recipes-tsstore/tsstore/tsstore-crates.inc"
NEW_PACKAGE = """
[[package]]
name = "brand-new-dep"
version = "1.2.3"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "{}"
""".format("ab" * 32)


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


class CheckTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="update-crates-test-"))
        self.lock_text = LOCK.read_text()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def lock(self, text):
        path = self.tmp / "Cargo.lock"
        path.write_text(text)
        return path

    def check_against(self, lock_text, inc=INC):
        return run("--check", "--lock", self.lock(lock_text), "--inc", inc)

    def test_the_committed_list_matches_cargo_lock(self):
        result = run("--check")
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_a_new_dependency_fails_and_is_named(self):
        result = self.check_against(self.lock_text + NEW_PACKAGE)
        self.assertEqual(result.returncode, 1)
        self.assertIn("1 crate(s) missing (in Cargo.lock, not in the .inc): brand-new-dep 1.2.3", result.stderr)
        self.assertIn("Regenerate it with: python3 yocto/update-crates.py", result.stderr)

    def test_a_removed_dependency_fails_and_is_named(self):
        without_memchr = re.sub(r'\[\[package\]\]\nname = "memchr"\n.*?\n\n', "", self.lock_text, flags=re.S)
        self.assertNotEqual(without_memchr, self.lock_text)
        result = self.check_against(without_memchr)
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr, r"1 crate\(s\) extra \(in the \.inc, not in Cargo\.lock\): memchr \S+")

    def test_a_changed_checksum_fails_and_is_named(self):
        version, checksum = re.search(
            r'name = "memchr"\nversion = "(\S+)"\n.*?checksum = "(\w+)"', self.lock_text, re.S).groups()
        result = self.check_against(self.lock_text.replace(checksum, "0" * 64))
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"with a missing or wrong sha256sum: memchr {version}", result.stderr)

    def test_a_git_dependency_is_refused(self):
        git = NEW_PACKAGE.replace('source = "registry+https://github.com/rust-lang/crates.io-index"',
                                  'source = "git+https://example.org/dep.git#0123abc"')
        result = self.check_against(self.lock_text + git)
        self.assertEqual(result.returncode, 2)
        self.assertIn("brand-new-dep 1.2.3 comes from git+", result.stderr)

    def test_regenerating_makes_the_check_pass(self):
        lock = self.lock(self.lock_text + NEW_PACKAGE)
        inc = self.tmp / "tsstore-crates.inc"
        self.assertEqual(run("--lock", lock, "--inc", inc).returncode, 0)
        result = run("--check", "--lock", lock, "--inc", inc)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('SRC_URI[brand-new-dep-1.2.3.sha256sum] = "' + "ab" * 32 + '"', inc.read_text())

    def test_bitbakes_own_layout_passes(self):
        # `bitbake -c update_crates` leaves a space after the opening quote.
        bitbake_style = INC.read_text().replace('SRC_URI += "\\\n', 'SRC_URI += " \\\n')
        self.assertNotEqual(bitbake_style, INC.read_text())
        inc = self.tmp / "bitbake-crates.inc"
        inc.write_text(bitbake_style)
        result = run("--check", "--inc", inc)
        self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main()
