"""The blocking client, from plain code and from threads."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time
import unittest
import uuid

from atasks_client import AtasksError, BlockingClient, BlockingHandle
from tests.gateway import free_port, gateway_url

URL = ""


def setUpModule() -> None:
    global URL
    URL = gateway_url()


class BlockingTest(unittest.TestCase):
    def setUp(self) -> None:
        self.client = BlockingClient(URL)
        self.addCleanup(self.client.close)

    def test_call(self) -> None:
        self.assertEqual(self.client.call("default", "demo.add", {"a": 2, "b": 3}), 5)
        add = self.client.task("default", "demo.add")
        self.assertEqual(add(a=2, b=3), 5)
        self.assertEqual(add({"a": 1, "b": 1}), 2)
        self.assertEqual(self.client.namespaces(), ["default", "seed"])
        self.assertIn("demo.add", [t["name"] for t in self.client.tasks("default")])

    def test_rest(self) -> None:
        with BlockingClient(URL, transport="rest") as c:
            self.assertEqual(c.call("default", "demo.sleep", {"ms": 400, "value": "r"}), "r")

    def test_errors(self) -> None:
        with self.assertRaises(AtasksError) as cm:
            self.client.call("default", "demo.fail", {"code": "insufficient_funds", "message": "balance is 100", "details": {"balance": 100}})
        self.assertEqual((cm.exception.code, cm.exception.details, cm.exception.state), ("insufficient_funds", {"balance": 100}, "failed"))
        with self.assertRaises(AtasksError) as cm:
            self.client.call("default", "demo.nope", {})
        self.assertEqual(cm.exception.code, "task_not_found")
        with self.assertRaises(AtasksError) as cm:
            self.client.task("default", "demo.add")(a=1, b=2, c=3)
        self.assertEqual((cm.exception.code, cm.exception.details["errors"][0]["pointer"]), ("bad_input", "/c"))
        with self.assertRaises(AtasksError) as cm:
            self.client.call("default", "demo.sleep", {"ms": 30000}, timeout=0.3)
        self.assertEqual((cm.exception.code, cm.exception.state), ("timeout", "timed_out"))

    def test_delay(self) -> None:
        t0 = time.monotonic()
        self.assertEqual(self.client.call("default", "demo.add", {"a": 2, "b": 3}, delay=0.3), 5)
        self.assertEqual(self.client.task("default", "demo.add", delay="300ms")(a=1, b=2), 3)
        self.assertGreaterEqual(time.monotonic() - t0, 0.6)
        h = self.client.start("default", "demo.add", {"a": 1, "b": 1}, delay="1h")
        inv = h.cancel()
        self.assertEqual((inv["state"], "run_at" in inv, "started_at" in inv), ("cancelled", True, False))

    def test_threads(self) -> None:
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda i: self.client.call("default", "demo.sleep", {"ms": 300, "value": i}), range(16)))
        self.assertEqual(got, list(range(16)))
        self.assertLess(time.monotonic() - t0, 3)

    def test_handle(self) -> None:
        h = self.client.start("default", "demo.gather", {"n": 3, "ms": 30000})
        self.assertIsInstance(h, BlockingHandle)
        self.assertEqual((h.ns, h.task, h.done()), ("default", "demo.gather", False))
        with self.assertRaises(TimeoutError):
            h.result(timeout=0.2)  # stops waiting; the invocation goes on
        self.assertFalse(h.done())
        inv = h.cancel()
        self.assertEqual(inv["state"], "cancelled")
        self.assertEqual(h.invocation, inv)
        with self.assertRaises(AtasksError) as cm:
            h.result()
        self.assertEqual(cm.exception.code, "cancelled")
        self.assertEqual(self.client.get("default", h.id)["state"], "cancelled")
        self.assertEqual(self.client.task("default", "demo.add").start(a=1, b=2).result(timeout=10), 3)

    def test_keyboard_interrupt_cancels(self) -> None:
        # Ctrl-C while a script waits in call(): the invocation is cancelled.
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            self.skipTest("SIGINT does not raise KeyboardInterrupt here (unittest -c?)")
        k = "py-test-" + uuid.uuid4().hex
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        self.addCleanup(timer.cancel)
        with self.assertRaises(KeyboardInterrupt):
            self.client.call("default", "demo.sleep", {"ms": 30000}, idempotency_key=k)
        h = self.client.start("default", "demo.sleep", {"ms": 30000}, idempotency_key=k)
        self.assertTrue(h.replayed)
        self.assertEqual(h.wait(timeout=10)["state"], "cancelled")

    def test_closed(self) -> None:
        c = BlockingClient(URL)
        c.close()
        c.close()  # idempotent
        with self.assertRaisesRegex(RuntimeError, "closed"):
            c.call("default", "demo.add", {"a": 1, "b": 2})
        self.assertFalse(any(t.name == "atasks-client" and t is c._thread and t.is_alive() for t in threading.enumerate()))

    def test_unreachable(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        with BlockingClient(url) as c:
            with self.assertRaises(AtasksError) as cm:
                c.call("default", "demo.add", {"a": 1, "b": 2})
        self.assertEqual((cm.exception.code, cm.exception.retryable), ("unavailable", True))
        self.assertIn(url.removeprefix("http://"), cm.exception.message)


if __name__ == "__main__":
    unittest.main()
