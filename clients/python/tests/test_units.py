"""Parts that need no gateway: durations, errors, inputs, URLs."""

from __future__ import annotations

import datetime
import pickle
import unittest
from typing import Any

from atasks_client import AtasksClient, AtasksError, BlockingClient, is_final
from atasks_client._client import _encode_input, _input_of
from atasks_client._duration import duration
from tests.gateway import free_port


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

    def test_from_problem_bad_input(self) -> None:
        # The details of an error frame for the same failure: {"errors": [...]}.
        errors = [{"pointer": "/a", "detail": "got string, want integer"}, {"pointer": "/c", "detail": "not a field of this type"}]
        problem = {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": "the input does not fit task demo.add: /a: got string, want integer; /c: not a field of this type",
            "code": "bad_input",
            "retryable": False,
            "errors": errors,
        }
        err = AtasksError.from_problem(400, "Bad Request", problem)
        self.assertEqual((err.code, err.message, err.status, err.retryable), ("bad_input", problem["detail"], 400, False))
        self.assertEqual(err.details, {"errors": errors})
        frame = AtasksError.from_wire({"code": "bad_input", "message": problem["detail"], "details": {"errors": errors}, "retryable": False})
        self.assertEqual((frame.code, frame.message, frame.details, frame.retryable), (err.code, err.message, err.details, err.retryable))
        # An empty list is still the errors; anything else keeps the problem.
        self.assertEqual(AtasksError.from_problem(400, "", {"code": "bad_input", "errors": []}).details, {"errors": []})
        odd = {"code": "bad_input", "errors": "?"}
        self.assertEqual(AtasksError.from_problem(400, "", odd).details, odd)

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

    def test_encode_input(self) -> None:
        self.assertEqual(_encode_input({"a": 2, "b": [1.5, None, True]}), '{"a":2,"b":[1.5,null,true]}')
        self.assertEqual(_encode_input(None), "null")
        self.assertEqual(_encode_input("é🌍"), '"é🌍"')
        cyclic: list[Any] = []
        cyclic.append(cyclic)
        deep: list[Any] = []
        for _ in range(100_000):
            deep = [deep]
        cannot: list[Any] = [{1, 2}, b"bytes", float("nan"), float("inf"), {"x": object()}, {(1, 2): "tuple key"}, cyclic, deep]
        for value in cannot:
            with self.subTest(value=type(value).__name__), self.assertRaises(AtasksError) as cm:
                _encode_input(value)
            err = cm.exception
            self.assertEqual((err.code, err.retryable, err.status, err.invocation), ("bad_input", False, None, None))
            self.assertRegex(err.message, "^the input cannot be encoded as JSON: ")

    def test_is_final(self) -> None:
        self.assertEqual([s for s in ("scheduled", "queued", "running", "succeeded", "failed", "cancelled", "timed_out") if is_final(s)], ["succeeded", "failed", "cancelled", "timed_out"])


class UnencodableInputTest(unittest.IsolatedAsyncioTestCase):
    async def test_refused_before_sending(self) -> None:
        # Nothing listens there: an error other than bad_input would mean the
        # client tried to send the call.
        for transport in ("ws", "rest", "auto"):
            async with AtasksClient(f"http://127.0.0.1:{free_port()}", transport=transport) as client:  # type: ignore[arg-type]
                for call in (client.call, client.start):
                    with self.subTest(transport=transport, call=call.__name__), self.assertRaises(AtasksError) as cm:
                        await call("default", "demo.echo", {"when": {1, 2}})
                    self.assertEqual(cm.exception.code, "bad_input")
                with self.assertRaises(AtasksError) as cm:
                    await client.task("default", "demo.echo")(x=float("nan"))
                self.assertEqual(cm.exception.code, "bad_input")


class BadOptionTest(unittest.IsolatedAsyncioTestCase):
    async def test_refused_before_sending(self) -> None:
        # A negative or malformed timeout or delay is a ValueError naming it,
        # whatever the transport; nothing listens there.
        for transport in ("ws", "rest"):
            async with AtasksClient(f"http://127.0.0.1:{free_port()}", transport=transport) as client:  # type: ignore[arg-type]
                for option in ("timeout", "delay"):
                    for bad in (-1, "-1s", "soon", datetime.timedelta(seconds=-1)):
                        for call in (client.call, client.start):
                            with self.subTest(transport=transport, option=option, bad=bad, call=call.__name__):
                                with self.assertRaisesRegex(ValueError, f"^{option}: "):
                                    await call("default", "demo.add", {"a": 1, "b": 1}, **{option: bad})
                    with self.assertRaisesRegex(ValueError, f"^{option}: "):
                        await client.task("default", "demo.add", **{option: -1})(a=1, b=1)


class UnencodableInputBlockingTest(unittest.TestCase):
    def test_refused_before_sending(self) -> None:
        with BlockingClient(f"http://127.0.0.1:{free_port()}") as client:
            with self.assertRaises(AtasksError) as cm:
                client.call("default", "demo.echo", b"bytes")
            self.assertEqual(cm.exception.code, "bad_input")
            with self.assertRaisesRegex(ValueError, "^delay: "):
                client.call("default", "demo.add", {"a": 1, "b": 1}, delay=-1)


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
