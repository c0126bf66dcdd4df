"""README.md's Install section runs as written: each of its ```sh blocks, in
a temporary directory holding a copy of clients/python where the
repository's root would be, exits 0, and the interpreter it sets up imports
atasks_client from where the route put it, asking no package index."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from tests.gateway import CLIENT_DIR

README = os.path.join(CLIENT_DIR, "README.md")
SECTION = re.compile(r"^## Install\n(.*?)^## ", re.S | re.M)
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)

# Each route: what tells its block, the interpreter it sets up, and where
# that interpreter must find atasks_client (relative to the root).
ROUTES = {
    "venv": ("--no-index", ".venv/bin/python", ".venv/lib"),
    "PYTHONPATH": ("PYTHONPATH=", "/usr/bin/python3", "clients/python/atasks_client"),
}

# The Debian package each module of /usr/bin/python3 comes from.
DEBIAN = {"aiohttp": "python3-aiohttp", "ensurepip": "python3-venv", "wheel": "python3-wheel"}


def install_blocks() -> list[str]:
    """The ```sh blocks of the README's Install section."""
    with open(README, encoding="utf-8") as f:
        section = SECTION.search(f.read())
    return BLOCK.findall(section.group(1)) if section else []


def missing_debian_packages() -> list[str]:
    """The Debian packages the routes need that /usr/bin/python3 lacks."""
    return [
        package
        for module, package in DEBIAN.items()
        if subprocess.run(["/usr/bin/python3", "-c", f"import {module}"], capture_output=True).returncode != 0
    ]


class InstallTest(unittest.TestCase):
    def setUp(self) -> None:
        missing = missing_debian_packages()
        if missing:
            why = "the README's install routes need: sudo apt-get install " + " ".join(missing)
            if os.environ.get("CI") == "true":
                self.fail(why)
            self.skipTest(why)

    def test_every_block_is_a_route(self) -> None:
        blocks = install_blocks()
        self.assertEqual(
            sorted(name for name, (marker, _, _) in ROUTES.items() for b in blocks if marker in b),
            sorted(ROUTES),
            f"each route in exactly one block of README's Install section:\n{blocks}",
        )
        self.assertEqual(len(blocks), len(ROUTES), "a block of README's Install section that no route tests")

    def test_routes_run_as_written(self) -> None:
        for name, (marker, interpreter, where) in ROUTES.items():
            with self.subTest(route=name):
                (block,) = [b for b in install_blocks() if marker in b]
                root = self.fresh_root()
                probe = f'{interpreter} -c "import atasks_client; print(atasks_client.__file__)"'
                proc = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", block + probe],
                    cwd=root,
                    env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PWD", "VIRTUAL_ENV")},
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                self.assertEqual(proc.returncode, 0, f"{block}\n{proc.stdout}{proc.stderr}")
                imported = proc.stdout.splitlines()[-1] if proc.stdout else ""
                self.assertTrue(imported.startswith(os.path.join(root, where)), f"{name} imported {imported!r}")

    def fresh_root(self) -> str:
        """A temporary directory with a copy of clients/python, removed at the end."""
        tmp = tempfile.TemporaryDirectory(prefix="atasks-install-")
        self.addCleanup(tmp.cleanup)
        root = os.path.realpath(tmp.name)
        ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".venv")
        shutil.copytree(CLIENT_DIR, os.path.join(root, "clients", "python"), ignore=ignore)
        return root


if __name__ == "__main__":
    unittest.main()
