"""Parts that need no gateway: durations, errors, inputs, URLs."""

from __future__ import annotations

import datetime
import pickle
import unittest
from typing import Any

from atasks_client import AtasksClient, AtasksError, BlockingClient, is_final
from atasks_client._client import _input_of
from atasks_client._duration import duration


class DurationTest(unittest.TestCase):
    def test_values(self) -> None:
        cases: list[tuple[Any, Any]] = [
            (None, None),
            ("", None),
            (0, ("0s", 0.0)),
            (5, ("5s", 5.0)),
            (0.25, ("250ms", 0.25)),
            (1.5, ("1500ms", 1.5)),
            (0.0000015, ("2us", 0.0000015)),
            (datetime.timedelta(minutes=1, seconds=30), ("90s", 90.0)),
            ("250ms", ("250ms", 0.25)),
            ("1m30s", ("1m30s", 90.0)),
            ("1.5h", ("1.5h", 5400.0)),
            ("0", ("0", 0.0)),
        ]
        for value, want in cases:
            with self.subTest(value=value):
                got = duration(value, "x")
                if want is None:
                    self.assertIsNone(got)
                else:
                    assert got is not None
                    self.assertEqual(got[0], want[0])
                    self.assertAlmostEqual(got[1], want[1])

    def test_bad(self) -> None:
        bad: list[Any] = [-1, float("nan"), float("inf"), "soon", "5", "-5s", "5 s"]
        for value in bad:
            with self.subTest(value=value), self.assertRaisesRegex(ValueError, "^timeout: "):
                duration(value, "timeout")
        wrong: list[Any] = [True, [1], object()]
        for value in wrong:
            with self.subTest(value=value), self.assertRaises(TypeError):
                duration(value, "timeout")


class ErrorTest(unittest.TestCase):
    def test_from_invocation(self) -> None:
        inv = {
            "id": "i1",
            "state": "failed",
            "error": {"code": "insufficient_funds", "message": "balance is 100", "details": {"balance": 100}, "retryable": True},
        }
        err = AtasksError.from_invocation(inv)
        self.assertEqual(
            (err.code, err.message, err.details, err.retryable, err.status, err.invocation, err.state),
            ("insufficient_funds", "balance is 100", {"balance": 100}, True, None, inv, "failed"),
        )
        self.assertEqual(str(err), "insufficient_funds: balance is 100")

    def test_from_invocation_without_error(self) -> None:
        err = AtasksError.from_invocation({"id": "i1", "state": "cancelled"})
        self.assertEqual((err.code, err.retryable, err.state), ("cancelled", False, "cancelled"))

    def test_from_problem(self) -> None:
        problem = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no task", "code": "task_not_found"}
        err = AtasksError.from_problem(404, "Not Found", problem)
        self.assertEqual((err.code, err.message, err.status, err.retryable, err.details), ("task_not_found", "no task", 404, False, problem))
        self.assertIsNone(err.invocation)
        self.assertIsNone(err.state)
        self.assertTrue(AtasksError.from_problem(503, "Service Unavailable", {"code": "unavailable"}).retryable)
        self.assertTrue(AtasksError.from_problem(500, "Internal Server Error", {"code": "x", "retryable": True}).retryable)
        self.assertFalse(AtasksError.from_problem(503, "Service Unavailable", {"code": "x", "retryable": False}).retryable)
        plain = AtasksError.from_problem(502, "Bad Gateway", None)
        self.assertEqual((plain.code, plain.message, plain.status), ("http_502", "502 Bad Gateway", 502))

    def test_from_wire(self) -> None:
        err = AtasksError.from_wire({"code": "too_many_calls", "message": "full", "retryable": True})
        self.assertEqual((err.code, err.message, err.retryable, err.status), ("too_many_calls", "full", True, None))

    def test_pickles(self) -> None:
        err = AtasksError("busy", "try later", {"n": 1}, True, 503, {"id": "x", "state": "failed"})
        back = pickle.loads(pickle.dumps(err))
        self.assertEqual(
            (back.code, back.message, back.details, back.retryable, back.status, back.invocation),
            (err.code, err.message, err.details, err.retryable, err.status, err.invocation),
        )


class InputTest(unittest.TestCase):
    def test_input_of(self) -> None:
        self.assertEqual(_input_of((), {"a": 2, "b": 3}), {"a": 2, "b": 3})
        self.assertEqual(_input_of(([1, 2],), {}), [1, 2])
        self.assertIsNone(_input_of((), {}))
        self.assertIsNone(_input_of((None,), {}))
        with self.assertRaises(TypeError):
            _input_of((1,), {"a": 1})
        with self.assertRaises(TypeError):
            _input_of((1, 2), {})

    def test_is_final(self) -> None:
        self.assertEqual([s for s in ("queued", "running", "succeeded", "failed", "cancelled", "timed_out") if is_final(s)], ["succeeded", "failed", "cancelled", "timed_out"])


class URLTest(unittest.TestCase):
    def test_bad_urls(self) -> None:
        for url in ("127.0.0.1:8080", "ftp://127.0.0.1", "http://", "not a url", "http://h:8080/?x=1"):
            with self.subTest(url=url), self.assertRaisesRegex(ValueError, "atasks gateway URL"):
                AtasksClient(url)
        with self.assertRaisesRegex(ValueError, "atasks gateway URL"):
            BlockingClient("localhost")

    def test_normalized(self) -> None:
        self.assertEqual(AtasksClient("http://127.0.0.1:8080/").url, "http://127.0.0.1:8080")
        self.assertEqual(AtasksClient("https://example.com/atasks/").url, "https://example.com/atasks")

    def test_bad_transport(self) -> None:
        with self.assertRaisesRegex(ValueError, "transport"):
            AtasksClient("http://127.0.0.1:8080", transport="carrier-pigeon")  # type: ignore[arg-type]


if __name__ == "__main__":
    unittest.main()
