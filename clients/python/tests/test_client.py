"""The asyncio client against a real gateway, over the WebSocket and over REST."""

from __future__ import annotations

import asyncio
import datetime
import time
import unittest
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from atasks_client import AtasksClient, AtasksError, Duration, Handle
from tests.gateway import free_port, gateway_url

URL = ""
SLEEP_LONG = {"ms": 30000, "value": "never"}


def setUpModule() -> None:
    global URL
    URL = gateway_url()


class AsyncTestCase(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        # The test loop runs in debug mode, which reports steps over 0.1 s:
        # noise on a busy machine (decoding a large payload takes that long).
        asyncio.get_running_loop().slow_callback_duration = 1.0


def key() -> str:
    return "py-test-" + uuid.uuid4().hex


class Calls:
    """The tests every transport passes; TRANSPORT picks it."""

    TRANSPORT: str
    client: AtasksClient

    # unittest.IsolatedAsyncioTestCase provides these.
    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
    assertIsNone: Any
    assertIsInstance: Any
    assertIn: Any
    assertLess: Any
    assertGreaterEqual: Any
    assertNotIn: Any
    assertRaises: Any
    assertRaisesRegex: Any
    assertRegex: Any

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()  # type: ignore[misc]
        self.client = AtasksClient(URL, transport=self.TRANSPORT)  # type: ignore[arg-type]

    async def asyncTearDown(self) -> None:
        await self.client.close()

    async def outcome_of(self, idempotency_key: str, task: str = "demo.sleep", input: Any = SLEEP_LONG) -> dict[str, Any]:
        """The final invocation the key names: a replay of the same call
        follows it. If the key named none, the replay started one: it is
        cancelled, and the answer says replayed False."""
        h = await self.client.start("default", task, input, idempotency_key=idempotency_key)
        if not h.replayed:
            await h.cancel()
        inv = await asyncio.wait_for(h.wait(), 10)
        return {"replayed": h.replayed, "state": inv["state"], "id": h.id}

    async def test_call(self) -> None:
        self.assertEqual(await self.client.call("default", "demo.add", {"a": 2, "b": 3}), 5)
        self.assertEqual(self.client.transport, self.TRANSPORT)
        if self.TRANSPORT == "ws":
            self.assertIsNotNone(self.client._conn)  # type: ignore[attr-defined]
        else:
            self.assertIsNone(self.client._conn)  # type: ignore[attr-defined]

    async def test_task_ref(self) -> None:
        add = self.client.task("default", "demo.add")
        self.assertEqual(await add(a=2, b=3), 5)
        self.assertEqual(await add({"a": 40, "b": 2}), 42)
        echo = self.client.task("default", "demo.echo")
        self.assertIsNone(await echo())
        self.assertEqual(await echo([1, "two", None]), [1, "two", None])
        self.assertEqual(await self.client.task("seed", "task_three")("three"), "three")
        with self.assertRaises(TypeError):
            await add(1, b=2)
        h = await add.start(a=1, b=1)
        self.assertEqual(await h, 2)

    async def test_values_survive(self) -> None:
        values = [
            None,
            True,
            2**70,
            -1.5,
            "héllo, 世界 🌍 é́ \"quoted\" \\ back\tslash\n",
            {"s": "x", "n": [1, 2.5, True, None], "o": {}},
            "ab€🌍" * 60000,  # over 1 MiB if non-ASCII were escaped
        ]
        for v in values:
            got = await self.client.call("default", "demo.echo", v)
            self.assertEqual(got, v)
            self.assertEqual(type(got), type(v))
        # What JSON cannot hold is refused before anything is sent.
        for bad in ({1, 2}, float("nan"), {"b": b"bytes"}):
            with self.assertRaises(AtasksError) as cm:
                await self.client.call("default", "demo.echo", bad)
            self.assertEqual((cm.exception.code, cm.exception.status, cm.exception.invocation), ("bad_input", None, None))

    async def test_parallel(self) -> None:
        t0 = time.monotonic()
        got = await asyncio.gather(*(self.client.call("default", "demo.sleep", {"ms": 300, "value": i}) for i in range(20)))
        self.assertEqual(got, list(range(20)))
        self.assertLess(time.monotonic() - t0, 3)  # in parallel, not 6 s in sequence

    async def test_nested(self) -> None:
        self.assertEqual(await self.client.call("default", "demo.fib", {"n": 10}), 55)
        self.assertEqual(await self.client.call("default", "demo.seed"), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])

    async def test_wait_then_long_poll(self) -> None:
        self.assertEqual(await self.client.call("default", "demo.sleep", {"ms": 800, "value": "late"}, wait="100ms"), "late")
        self.assertEqual(await self.client.call("default", "demo.sleep", {"ms": 300, "value": "w"}, wait=0), "w")

    async def test_cancel_by_cancelling_the_asyncio_task(self) -> None:
        k = key()
        t = asyncio.ensure_future(self.client.call("default", "demo.sleep", SLEEP_LONG, idempotency_key=k))
        await asyncio.sleep(0.3)
        t.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await t
        self.assertEqual(await self.outcome_of(k), {"replayed": True, "state": "cancelled", "id": unittest.mock.ANY})

    async def test_cancel_by_wait_for(self) -> None:
        k = key()
        with self.assertRaises(TimeoutError):
            await asyncio.wait_for(self.client.call("default", "demo.sleep", SLEEP_LONG, idempotency_key=k), 0.3)
        out = await self.outcome_of(k)
        self.assertEqual((out["replayed"], out["state"]), (True, "cancelled"))

    async def test_cancel_at_once(self) -> None:
        # Cancelled before it was sent, or before the gateway answered (REST:
        # during the first POST): nothing keeps running.
        for delay in (0, 0.005, 0.05):
            k = key()
            t = asyncio.ensure_future(self.client.call("default", "demo.sleep", SLEEP_LONG, idempotency_key=k))
            await asyncio.sleep(delay)
            t.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await t
            await asyncio.sleep(0.5)  # the call may still be on its way
            out = await self.outcome_of(k)
            self.assertEqual(out["state"], "cancelled", delay)  # replayed or not: it did not go on

    async def test_cancel_then_close(self) -> None:
        # Closing the client right after a cancel still lets the cancel out.
        k = key()
        t = asyncio.ensure_future(self.client.call("default", "demo.sleep", SLEEP_LONG, idempotency_key=k))
        await asyncio.sleep(0.3)
        t.cancel()
        await self.client.close()
        async with AtasksClient(URL, transport="rest") as other:
            h = await other.start("default", "demo.sleep", SLEEP_LONG, idempotency_key=k)
            self.assertTrue(h.replayed)
            self.assertEqual((await asyncio.wait_for(h.wait(), 10))["state"], "cancelled")

    async def test_cancel_by_handle(self) -> None:
        h = await self.client.start("default", "demo.gather", {"n": 4, "ms": 30000})
        self.assertIsInstance(h, Handle)
        self.assertIsInstance(h.id, str)
        self.assertEqual((h.ns, h.task), ("default", "demo.gather"))
        await asyncio.sleep(0.3)
        inv = await asyncio.wait_for(h.cancel(), 10)
        self.assertEqual(inv["state"], "cancelled")
        self.assertEqual(inv["error"]["code"], "cancelled")
        self.assertEqual(len(inv["children"]), 4)
        self.assertTrue(h.done())
        self.assertEqual(h.state, "cancelled")
        self.assertEqual(h.invocation, inv)
        with self.assertRaises(AtasksError) as cm:
            await h.result()
        self.assertEqual((cm.exception.code, cm.exception.state), ("cancelled", "cancelled"))
        for child in inv["children"]:  # the cancel reached the tree
            try:
                self.assertEqual((await self.client.get("default", child, wait=5))["state"], "cancelled")
            except AtasksError as err:
                # Over RabbitMQ the gateway knows only the invocations it
                # started, not the children workers start.
                self.assertEqual(err.code, "invocation_not_found")
        self.assertEqual((await h.cancel())["state"], "cancelled")  # idempotent

    async def test_cancel_a_finished_one(self) -> None:
        h = await self.client.start("default", "demo.add", {"a": 1, "b": 2})
        self.assertEqual(await h.result(), 3)
        self.assertEqual((await h.cancel())["state"], "succeeded")

    async def test_result_awaiter_cancel_does_not_cancel(self) -> None:
        h = await self.client.start("default", "demo.sleep", {"ms": 500, "value": "v"})
        with self.assertRaises(TimeoutError):
            await asyncio.wait_for(h.result(), 0.1)
        self.assertEqual(await h.result(), "v")

    async def test_timeout(self) -> None:
        timeouts: tuple[Duration, ...] = (0.3, "300ms", datetime.timedelta(milliseconds=300))
        for timeout in timeouts:
            t0 = time.monotonic()
            with self.assertRaises(AtasksError) as cm:
                await self.client.call("default", "demo.sleep", SLEEP_LONG, timeout=timeout)
            err = cm.exception
            self.assertLess(time.monotonic() - t0, 5)
            # The invocation's state is timed_out; its error's code is the wire's "timeout".
            self.assertEqual((err.code, err.state, err.retryable), ("timeout", "timed_out", False))
            assert err.invocation is not None
            self.assertEqual(err.invocation["state"], "timed_out")

    async def test_delay(self) -> None:
        delays: tuple[Duration, ...] = (0.3, "300ms", datetime.timedelta(milliseconds=300))
        for delay in delays:
            t0 = time.monotonic()
            h = await self.client.start("default", "demo.add", {"a": 2, "b": 5}, delay=delay)
            self.assertEqual(await h, 7)
            self.assertGreaterEqual(time.monotonic() - t0, 0.3)
            inv = h.invocation
            assert inv is not None
            # It started no earlier than its run_at.
            run_at, started_at = (datetime.datetime.fromisoformat(inv[k]) for k in ("run_at", "started_at"))
            self.assertGreaterEqual(started_at, run_at)
        add = self.client.task("default", "demo.add", delay=0.3)
        t0 = time.monotonic()
        self.assertEqual(await add(a=1, b=2), 3)
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        self.assertEqual(await self.client.call("default", "demo.add", {"a": 1, "b": 1}, delay=0), 2)

    async def test_delay_cancelled_before_its_time(self) -> None:
        h = await self.client.start("default", "demo.add", {"a": 1, "b": 1}, delay="1h")
        inv = await self.client.get("default", h.id)
        self.assertEqual(inv["state"], "scheduled")
        self.assertIn("run_at", inv)
        inv = await asyncio.wait_for(h.cancel(), 10)
        self.assertEqual((inv["state"], inv["error"]["code"]), ("cancelled", "cancelled"))
        self.assertNotIn("started_at", inv)  # it never ran

    async def test_delay_refused(self) -> None:
        # A deadline before the call's time could only time out: refused
        # before sending, the same way over both transports.
        with self.assertRaisesRegex(ValueError, "^timeout .* ends before"):
            await self.client.call("default", "demo.add", {"a": 1, "b": 1}, delay="2s", timeout="1s")
        for bad in (-1, "-1s", "soon", datetime.timedelta(seconds=-1), "721h"):
            with self.assertRaisesRegex(ValueError, "^delay: "):
                await self.client.call("default", "demo.add", {"a": 1, "b": 1}, delay=bad)
            with self.assertRaisesRegex(ValueError, "^delay: "):
                await self.client.start("default", "demo.add", {"a": 1, "b": 1}, delay=bad)

    async def test_typed_error(self) -> None:
        details = {"balance": 100, "currency": "EUR"}
        with self.assertRaises(AtasksError) as cm:
            await self.client.call("default", "demo.fail", {"code": "insufficient_funds", "message": "balance is 100", "details": details})
        err = cm.exception
        self.assertEqual(
            (err.code, err.message, err.details, err.retryable, err.status, err.state),
            ("insufficient_funds", "balance is 100", details, False, None, "failed"),
        )
        assert err.invocation is not None
        self.assertEqual((err.invocation["task"], err.invocation["error"]["code"]), ("demo.fail", "insufficient_funds"))
        self.assertEqual(str(err), "insufficient_funds: balance is 100")

        with self.assertRaises(AtasksError) as cm:
            await self.client.call("default", "demo.fail", {"code": "busy", "message": "try later", "retryable": True})
        self.assertEqual((cm.exception.code, cm.exception.retryable), ("busy", True))

        with self.assertRaises(AtasksError) as cm:
            await self.client.call("default", "demo.panic")
        self.assertEqual((cm.exception.code, cm.exception.state), ("panic", "failed"))

    async def test_bad_input(self) -> None:
        # The gateway checks the input against the task's schema before it
        # queues anything: the details name each field at fault, the same
        # over the WebSocket and over REST.
        status = None if self.TRANSPORT == "ws" else 400
        cases: list[tuple[tuple[Any, ...], list[str]]] = [
            ((), [""]),  # no input: null
            ((None,), [""]),
            (("not an object",), [""]),
            (({},), ["/a", "/b"]),
            (({"a": 1, "b": 2, "c": 3},), ["/c"]),
            (({"a": "x", "b": 2},), ["/a"]),
            (({"a": 1.5, "b": 2, "c": 3},), ["/a", "/c"]),
        ]
        for args, pointers in cases:
            for call in (self.client.call, self.client.start):
                with self.subTest(input=args, call=call.__name__), self.assertRaises(AtasksError) as cm:
                    await call("default", "demo.add", *args)
                err = cm.exception
                self.assertEqual((err.code, err.status, err.retryable, err.invocation, err.state), ("bad_input", status, False, None, None))
                self.assertIsInstance(err.details, dict)
                self.assertEqual(list(err.details), ["errors"])
                self.assertEqual(sorted(e["pointer"] for e in err.details["errors"]), pointers)
                self.assertTrue(all(isinstance(e["detail"], str) and e["detail"] for e in err.details["errors"]), err.details)
                self.assertRegex(err.message, "demo.add")
        with self.assertRaises(AtasksError) as cm:
            await self.client.task("default", "demo.add")(a=1, c=2)
        self.assertEqual(sorted(e["pointer"] for e in cm.exception.details["errors"]), ["/b", "/c"])
        # demo.echo takes anything.
        self.assertEqual(await self.client.call("default", "demo.echo", {"c": 3}), {"c": 3})

    async def test_gateway_errors(self) -> None:
        status = None if self.TRANSPORT == "ws" else 404
        for ns, task, code in (("default", "demo.nope", "task_not_found"), ("nope", "demo.add", "namespace_not_found")):
            with self.assertRaises(AtasksError) as cm:
                await self.client.call(ns, task, {})
            err = cm.exception
            self.assertEqual((err.code, err.status, err.retryable, err.invocation), (code, status, False, None))
            self.assertIn(task if code == "task_not_found" else ns, err.message)
            with self.assertRaises(AtasksError) as cm:
                await self.client.start(ns, task, {})
            self.assertEqual(cm.exception.code, code)
        # The client goes on after them.
        self.assertEqual(await self.client.call("default", "demo.add", {"a": 1, "b": 1}), 2)

    async def test_idempotency_key(self) -> None:
        k = key()
        h1 = await self.client.start("default", "demo.add", {"a": 40, "b": 2}, idempotency_key=k)
        self.assertEqual(await h1.result(), 42)
        h2 = await self.client.start("default", "demo.add", {"a": 40, "b": 2}, idempotency_key=k)
        self.assertEqual(await h2.result(), 42)
        self.assertEqual(h1.id, h2.id)
        self.assertEqual((h1.replayed, h2.replayed), (False, True))
        self.assertEqual(await self.client.call("default", "demo.add", {"a": 40, "b": 2}, idempotency_key=k), 42)
        with self.assertRaises(AtasksError) as cm:
            await self.client.call("default", "demo.add", {"a": 1, "b": 2}, idempotency_key=k)
        self.assertEqual(cm.exception.code, "idempotency_conflict")

    async def test_subscribe(self) -> None:
        async with AtasksClient(URL, transport="rest") as other:
            started = await other.start("default", "demo.sleep", {"ms": 300, "value": "sub"}, detach=True)
            h = await self.client.subscribe("default", started.id)
            self.assertEqual(await asyncio.wait_for(h.result(), 10), "sub")
            self.assertEqual(h.task, "demo.sleep")
            h = await self.client.subscribe("default", started.id)  # finished: at once
            self.assertEqual(await asyncio.wait_for(h.result(), 10), "sub")
        h = await self.client.subscribe("default", "no-such-invocation")
        with self.assertRaises(AtasksError) as cm:
            await asyncio.wait_for(h.result(), 10)
        self.assertEqual(cm.exception.code, "invocation_not_found")

    async def test_close_fails_pending_calls(self) -> None:
        t = asyncio.ensure_future(self.client.call("default", "demo.sleep", {"ms": 3000}))
        await asyncio.sleep(0.3)
        await self.client.close()
        with self.assertRaises(AtasksError) as cm:
            await asyncio.wait_for(t, 10)
        self.assertEqual((cm.exception.code, cm.exception.retryable), ("unavailable", True))
        # Usable again afterwards.
        self.assertEqual(await self.client.call("default", "demo.add", {"a": 1, "b": 2}), 3)


class WSCallsTest(Calls, AsyncTestCase):
    TRANSPORT = "ws"

    async def test_one_connection(self) -> None:
        await self.client.call("default", "demo.add", {"a": 1, "b": 2})
        conn = self.client._conn  # type: ignore[attr-defined]
        await asyncio.gather(*(self.client.call("default", "demo.add", {"a": i, "b": 0}) for i in range(50)))
        self.assertIs(self.client._conn, conn)  # type: ignore[attr-defined]

    async def test_detach(self) -> None:
        h = await self.client.start("default", "demo.sleep", SLEEP_LONG, detach=True)
        plain = await self.client.start("default", "demo.sleep", SLEEP_LONG)
        await self.client.close()  # the gateway cancels the calls that were not detached
        async with AtasksClient(URL, transport="rest") as other:
            self.assertEqual((await other.get("default", plain.id, wait=5))["state"], "cancelled")
            self.assertIn((await other.get("default", h.id))["state"], ("queued", "running"))
            self.assertEqual((await other.cancel("default", h.id))["state"], "cancelled")


class RESTCallsTest(Calls, AsyncTestCase):
    TRANSPORT = "rest"


class SameErrorTest(AsyncTestCase):
    async def test_bad_input_is_the_same_error_over_both_transports(self) -> None:
        inputs: list[Any] = [None, {}, {"a": 1, "b": 2, "c": 3}, {"a": "x", "b": 2}, [1, 2]]

        async def errors(transport: str) -> list[tuple[Any, ...]]:
            out = []
            async with AtasksClient(URL, transport=transport) as client:  # type: ignore[arg-type]
                for value in inputs:
                    with self.assertRaises(AtasksError) as cm:
                        await client.call("default", "demo.add", value)
                    e = cm.exception
                    out.append((e.code, e.message, e.details, e.retryable, e.invocation))
            return out

        ws, rest = await errors("ws"), await errors("rest")
        self.assertEqual(ws, rest)
        self.assertEqual({e[0] for e in ws}, {"bad_input"})


class CatalogTest(AsyncTestCase):
    async def test_catalog(self) -> None:
        async with AtasksClient(URL) as client:
            self.assertEqual(await client.namespaces(), ["default", "seed"])
            tasks = {t["name"]: t for t in await client.tasks("default")}
            self.assertIn("demo.add", tasks)
            schema = tasks["demo.add"]["schema"]
            self.assertEqual(sorted(schema["input"]["required"]), ["a", "b"])
            self.assertEqual({k: v["type"] for k, v in schema["input"]["properties"].items()}, {"a": "integer", "b": "integer"})
            self.assertEqual(schema["output"]["type"], "integer")
            with self.assertRaises(AtasksError) as cm:
                await client.tasks("nope")
            self.assertEqual((cm.exception.code, cm.exception.status), ("namespace_not_found", 404))

    async def test_get(self) -> None:
        async with AtasksClient(URL) as client:
            h = await client.start("default", "demo.sleep", {"ms": 300, "value": "g"}, detach=True)
            inv = await client.get("default", h.id)
            self.assertIn(inv["state"], ("queued", "running"))
            inv = await client.get("default", h.id, wait=10)
            self.assertEqual((inv["state"], inv["result"]), ("succeeded", "g"))
            with self.assertRaises(AtasksError) as cm:
                await client.get("default", "no-such-invocation")
            self.assertEqual((cm.exception.code, cm.exception.status), ("invocation_not_found", 404))
            with self.assertRaises(ValueError):
                await client.get("default", h.id, wait="soon")


class RestOnlyProxy:
    """An HTTP server that forwards REST to the gateway and has no /v1/ws,
    as a proxy that does not pass WebSockets."""

    async def start(self) -> str:
        self.session = aiohttp.ClientSession()
        self.requests: list[str] = []
        app = web.Application(client_max_size=4 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if request.path == "/v1/ws":
            return web.json_response({"code": "not_found"}, status=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept", "idempotency-key")}
        async with self.session.request(request.method, URL + request.path_qs, data=await request.read(), headers=headers) as r:
            body = await r.read()
            out = {k: r.headers[k] for k in ("Content-Type", "Location", "Idempotent-Replayed") if k in r.headers}
            return web.Response(status=r.status, body=body, headers=out)

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.session.close()


class TransportChoiceTest(AsyncTestCase):
    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.proxy = RestOnlyProxy()
        self.url = await self.proxy.start()

    async def asyncTearDown(self) -> None:
        await self.proxy.stop()

    async def test_auto_falls_back_to_rest(self) -> None:
        async with AtasksClient(self.url) as client:
            self.assertEqual(client.transport, "ws")
            self.assertEqual(await client.call("default", "demo.add", {"a": 2, "b": 3}), 5)
            self.assertEqual(client.transport, "rest")  # for ws_retry
            self.assertEqual(await client.call("default", "demo.sleep", {"ms": 400, "value": "x"}), "x")
        self.assertEqual(self.proxy.requests[0], "GET /v1/ws")
        self.assertEqual(self.proxy.requests.count("GET /v1/ws"), 1)
        self.assertIn("POST /v1/ns/default/tasks/demo.add", self.proxy.requests)

    async def test_ws_only_fails_clearly(self) -> None:
        async with AtasksClient(self.url, transport="ws") as client:
            with self.assertRaises(AtasksError) as cm:
                await client.call("default", "demo.add", {"a": 2, "b": 3})
        err = cm.exception
        self.assertEqual((err.code, err.retryable), ("unavailable", True))
        self.assertIn("/v1/ws", err.message)
        self.assertIn("404", err.message)

    async def test_per_call_transport(self) -> None:
        async with AtasksClient(URL, transport="ws") as client:
            self.assertEqual(await client.call("default", "demo.add", {"a": 2, "b": 3}, transport="rest"), 5)
            self.assertIsNone(client._conn)  # type: ignore[attr-defined]


class UnreachableTest(AsyncTestCase):
    async def test_nothing_listens(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        for transport in ("auto", "ws", "rest"):
            async with AtasksClient(url, transport=transport) as client:  # type: ignore[arg-type]
                t0 = time.monotonic()
                with self.assertRaises(AtasksError) as cm:
                    await client.call("default", "demo.add", {"a": 1, "b": 2})
                self.assertLess(time.monotonic() - t0, 5)
                err = cm.exception
                self.assertEqual((err.code, err.retryable, err.status), ("unavailable", True, None), transport)
                self.assertIn(url.removeprefix("http://"), err.message)
                with self.assertRaises(AtasksError) as cm:
                    await client.namespaces()
                self.assertEqual(cm.exception.code, "unavailable")

    async def test_not_a_gateway(self) -> None:
        # An HTTP server that is not an atasks gateway: its answers say so.
        async def hello(_: web.Request) -> web.Response:
            return web.Response(text="<html>hello</html>", content_type="text/html")

        app = web.Application()
        app.router.add_get("/v1/ns", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with AtasksClient(f"http://127.0.0.1:{port}", transport="rest") as client:
                with self.assertRaises(AtasksError) as cm:
                    await client.namespaces()
                self.assertEqual(cm.exception.code, "bad_response")
                self.assertIn("not JSON", cm.exception.message)
                with self.assertRaises(AtasksError) as cm:
                    await client.call("default", "demo.add", {"a": 1, "b": 2})
                self.assertEqual((cm.exception.code, cm.exception.status), ("http_404", 404))
        finally:
            await runner.cleanup()


class EventLoopTest(unittest.TestCase):
    def test_one_loop_at_a_time(self) -> None:
        client = AtasksClient(URL)

        async def add() -> Any:
            return await client.call("default", "demo.add", {"a": 1, "b": 2})

        async def add_and_close() -> Any:
            try:
                return await add()
            finally:
                await client.close()

        self.assertEqual(asyncio.run(add_and_close()), 3)
        loop = asyncio.new_event_loop()
        try:
            self.assertEqual(loop.run_until_complete(add()), 3)  # closed in between: a new loop is fine
            with self.assertRaisesRegex(RuntimeError, "another event loop"):
                asyncio.run(add())  # not closed: its connections belong to the other loop
        finally:
            loop.run_until_complete(client.close())
            loop.close()


import unittest.mock  # noqa: E402  (ANY, used above)

if __name__ == "__main__":
    unittest.main()
