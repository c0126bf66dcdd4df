"""The conformance runner keeps the runner contract of conformance/README.md."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import unittest
import uuid
from typing import Any

from tests.gateway import CLIENT_DIR, REPO_ROOT, free_port, gateway_url, python

RUNNER = os.path.join(CLIENT_DIR, "conformance.py")
CASES = os.path.join(REPO_ROOT, "conformance", "cases.json")


def run(url: str, cases: str | None, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATASKS_")}
    env["ATASKS_GATEWAY_URL"] = url
    env["ATASKS_CONFORMANCE_RUN"] = uuid.uuid4().hex[:8]
    if cases is not None:
        env["ATASKS_CONFORMANCE_CASES"] = cases
    return subprocess.run([python(), RUNNER], env=env, capture_output=True, text=True, timeout=timeout)


class ConformanceRunnerTest(unittest.TestCase):
    def setUp(self) -> None:
        self.url = gateway_url()
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def cases_file(self, cases: list[dict[str, Any]]) -> str:
        path = os.path.join(self.tmp.name, f"cases-{uuid.uuid4().hex}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "cases": cases}, f)
        return path

    def test_the_suite(self) -> None:
        with open(CASES, encoding="utf-8") as f:
            names = [c["name"] for c in json.load(f)["cases"]]
        proc = run(self.url, CASES)
        lines = proc.stdout.splitlines()
        self.assertEqual(
            lines,
            [f"ok [{transport}] {name}" for transport in ("ws", "rest") for name in names],
            proc.stdout + proc.stderr,
        )
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_a_failing_case(self) -> None:
        path = self.cases_file(
            [
                {"name": "add", "task": "demo.add", "input": {"a": 2, "b": 3}, "expect": {"result": 5}},
                {"name": "wrong", "task": "demo.add", "input": {"a": 2, "b": 3}, "expect": {"result": 6}},
                {"name": "true is not 1", "task": "demo.echo", "input": 1, "expect": {"result": True}},
                {"name": "not an error", "task": "demo.add", "input": {"a": 1, "b": 1}, "expect": {"error": {"code": "task_not_found"}}},
                {"name": "pointers", "task": "demo.add", "input": {"a": 1, "c": 3}, "expect": {"error": {"code": "bad_input", "pointers": ["/c", "/b"]}}},
                {"name": "wrong pointers", "task": "demo.add", "input": {"a": 1, "b": 2, "c": 3}, "expect": {"error": {"code": "bad_input", "pointers": ["/d"]}}},
                {"name": "no pointers", "task": "demo.fail", "input": {"code": "bad_input"}, "expect": {"error": {"code": "bad_input", "pointers": []}}},
            ]
        )
        proc = run(self.url, path)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertEqual(
            proc.stdout.splitlines(),
            [
                "ok [ws] add",
                "FAIL [ws] wrong: got result 5, want result 6",
                "FAIL [ws] true is not 1: got result 1, want result true",
                "FAIL [ws] not an error: got result 2, want error 'task_not_found'",
                "ok [ws] pointers",
                """FAIL [ws] wrong pointers: error details {"errors": [{"pointer": "/c", "detail": "not a field of this type"}]}: pointers ['/c'], want ['/d']""",
                "FAIL [ws] no pointers: error details null: pointers None, want []",
                "ok [rest] add",
                "FAIL [rest] wrong: got result 5, want result 6",
                "FAIL [rest] true is not 1: got result 1, want result true",
                "FAIL [rest] not an error: got result 2, want error 'task_not_found'",
                "ok [rest] pointers",
                """FAIL [rest] wrong pointers: error details {"errors": [{"pointer": "/c", "detail": "not a field of this type"}]}: pointers ['/c'], want ['/d']""",
                "FAIL [rest] no pointers: error details null: pointers None, want []",
            ],
        )

    def test_cannot_run(self) -> None:
        ok: dict[str, Any] = {"name": "add", "task": "demo.add", "input": {"a": 2, "b": 3}, "expect": {"result": 5}}
        bad_cases: list[list[dict[str, Any]]] = [
            [{**ok, "retries": 3}],  # an unknown field
            [{**ok, "delay": "soon"}],
            [{**ok, "delay": "-1s"}],
            [{**ok, "delay": 0.3}],  # a Go duration string, not seconds
            [{**ok, "expect": {"result": 5, "echo": True}}],
            [{**ok, "expect": {"error": {"code": "x", "status": 404}}}],
            [{**ok, "expect": {"error": {"code": "x", "pointers": "/a"}}}],
            [{**ok, "input_repeat": {"text": "a", "times": 2, "sep": ","}}],
            [ok, ok],  # duplicate name
        ]
        for cases in bad_cases:
            with self.subTest(cases=cases):
                proc = run(self.url, self.cases_file(cases))
                self.assertEqual(proc.returncode, 2, proc.stdout)
                self.assertEqual(proc.stdout, "")
                self.assertIn("cannot run", proc.stderr)
        envs: list[tuple[str, str | None]] = [
            (self.url, None),  # no ATASKS_CONFORMANCE_CASES
            (self.url, os.path.join(self.tmp.name, "missing.json")),
            (f"http://127.0.0.1:{free_port()}", self.cases_file([ok])),  # no gateway there
        ]
        for url, path in envs:
            with self.subTest(url=url, cases=path):
                proc = run(url, path)
                self.assertEqual(proc.returncode, 2, proc.stdout)
                self.assertIn("cannot run", proc.stderr)


if __name__ == "__main__":
    unittest.main()
