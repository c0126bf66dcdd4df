"""README.md's Python snippets run as written against the gateway (its URL
substituted), each as a script of its own; every ``print(...)  # output``
comment is checked against what the script prints, in order."""

from __future__ import annotations

import os
import re
import subprocess
import unittest

from tests.gateway import CLIENT_DIR, env_with_client, gateway_url, python

README = os.path.join(CLIENT_DIR, "README.md")
README_URL = "http://127.0.0.1:8080"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
EXPECT = re.compile(r"^\s*print\(.*\)  # (.*)$")


def snippets() -> list[tuple[int, str]]:
    """The ```python blocks of the README, with the line each starts on."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


class ReadmeTest(unittest.TestCase):
    def test_snippets_run_as_written(self) -> None:
        url = gateway_url()
        blocks = snippets()
        self.assertGreaterEqual(len(blocks), 5)
        for line, code in blocks:
            with self.subTest(readme_line=line):
                self.assertIn(README_URL, code, "a snippet talks to the gateway the README names")
                want = [m.group(1) for m in map(EXPECT.match, code.splitlines()) if m]
                self.assertTrue(want, "a snippet shows its output in # comments")
                proc = subprocess.run(
                    [python(), "-X", "dev", "-c", code.replace(README_URL, url)],
                    env=env_with_client(),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                self.assertEqual(proc.returncode, 0, f"README line {line}:\n{proc.stderr}")
                self.assertEqual(proc.stdout.splitlines(), want, f"README line {line}")
                self.assertNotIn("Unclosed", proc.stderr)
                self.assertNotIn("never retrieved", proc.stderr)


if __name__ == "__main__":
    unittest.main()
