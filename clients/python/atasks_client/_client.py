"""The asyncio client of the atasks gateway.

Calls go over one shared WebSocket (``/v1/ws``, docs/WEBSOCKET.md), many
calls multiplexed by ref; over REST (``POST ?wait=``, then long-poll
``GET ?wait=``) when asked with ``transport="rest"``, or in ``"auto"`` mode
when the WebSocket cannot be opened.

Ownership: the client owns an aiohttp session, at most one WebSocket
connection (whose reader task ends with it), and one driver task per call
in flight (it connects, then sends the call frame, or runs the REST
requests). :meth:`AtasksClient.close` first gives cancels in flight up to
``CLOSE_GRACE`` to reach the gateway, then closes the WebSocket (the gateway
cancels its calls that were not detached), fails the calls still pending
with ``unavailable``, cancels the drivers and waits for them, and closes the
session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Generator, Mapping
from typing import Any, Literal

import aiohttp
import yarl

from ._duration import Duration, duration
from ._errors import AtasksError, Invocation, unavailable

__all__ = ["AtasksClient", "Handle", "TaskRef", "FINAL_STATES", "is_final", "Transport"]

log = logging.getLogger("atasks_client")

#: The states an invocation ends in.
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})

# The longest delay the gateway takes, in seconds (30 days).
MAX_DELAY = 30 * 24 * 3600

#: How calls travel: ``"ws"`` (one shared WebSocket), ``"rest"`` (HTTP
#: requests and long-polls), or ``"auto"`` (WebSocket, REST when it cannot be
#: opened).
Transport = Literal["auto", "ws", "rest"]
_TRANSPORTS = ("auto", "ws", "rest")

# How long the first POST of a REST call waits for the outcome unless the
# call names a wait: short, so that the invocation's id (needed to cancel it)
# is known soon.
FIRST_WAIT = 0.2
# Added to a request's own wait to bound it.
REQUEST_MARGIN = 30.0
# How long the gateway's DELETE may wait for the final state.
CANCEL_WAIT = 5.0
# Bounds one WebSocket send.
SEND_TIMEOUT = 30.0
# How long close() lets cancels in flight reach the gateway.
CLOSE_GRACE = 5.0
# The largest WebSocket message read.
MAX_MESSAGE = 64 << 20
# The client pings a WebSocket that has been silent this long, and closes it
# if the pong takes half as long: calls on a dead connection do not hang.
HEARTBEAT = 30.0


def is_final(state: str | None) -> bool:
    """Whether an invocation in ``state`` has ended."""
    return state in FINAL_STATES


def _noop() -> None:
    pass


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # Marks a future's exception retrieved: nobody may be waiting for it.
    if not fut.cancelled():
        fut.exception()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _encode_input(value: Any) -> str:
    """The input as JSON text; what JSON cannot hold (a set, bytes, NaN, a
    cycle, nesting deeper than the interpreter recurses) raises a
    ``bad_input`` AtasksError before anything is sent, whatever the
    transport."""
    try:
        return _dumps(value)
    except (TypeError, ValueError, RecursionError) as err:
        raise AtasksError("bad_input", f"the input cannot be encoded as JSON: {err}") from err


def _enc(segment: str) -> str:
    return urllib.parse.quote(str(segment), safe="")


def _cancelled_before_start() -> AtasksError:
    return AtasksError("cancelled", "the call was cancelled before the gateway started it")


def _closed() -> AtasksError:
    return unavailable("the client was closed")


def _base_url(url: str) -> str:
    try:
        u = yarl.URL(url)
    except (TypeError, ValueError) as err:
        raise ValueError(f"atasks gateway URL: {url!r} is not a URL: {err}") from None
    if u.scheme not in ("http", "https") or not u.host:
        raise ValueError(f"atasks gateway URL: want http://host:port or https://host:port, got {url!r}")
    if u.query_string or u.fragment:
        raise ValueError(f"atasks gateway URL: {url!r} has a query or fragment; give the gateway's base URL")
    return str(u).rstrip("/")


def _input_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    if args and kwargs:
        raise TypeError("pass the task's input as one positional argument or as keyword arguments, not both")
    if len(args) > 1:
        raise TypeError(f"a task takes one input: one positional argument or keyword arguments, got {len(args)} positional")
    if args:
        return args[0]
    return dict(kwargs) if kwargs else None


def _result_of(inv: Invocation) -> Any:
    if inv.get("state") == "succeeded":
        return inv.get("result")
    raise AtasksError.from_invocation(inv)


def _check_invocation(method: str, url: str, body: Any) -> Invocation:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(body.get("state"), str):
        raise AtasksError("bad_response", f"{method} {url}: the answer is not an invocation")
    return body


class _Op:
    """One call or subscription, whatever carries it: it settles once, with
    the final invocation or an error."""

    def __init__(
        self,
        kind: Literal["call", "subscribe"],
        ns: str,
        task: str | None,
        *,
        id: str | None = None,
        detach: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.kind = kind
        self.ns = ns
        self.task = task
        self.id = id
        self.detach = detach
        self.replayed = False
        self.state: str | None = None  # the latest known
        self.children: list[str] = []
        self.accepted: asyncio.Future[str] = loop.create_future()
        self.done: asyncio.Future[Invocation] = loop.create_future()
        self.accepted.add_done_callback(_retrieve)
        self.done.add_done_callback(_retrieve)
        self.aborted = False
        # What aborting does, set by whatever carries the op; None until it
        # is dispatched: aborting then fails the op at once.
        self.on_abort: Callable[[], object] | None = None
        if id is not None:
            self.accepted.set_result(id)

    @property
    def settled(self) -> bool:
        return self.done.done()

    def accept(self, id: str, task: str | None = None, replayed: bool = False) -> None:
        self.id = id
        if task:
            self.task = task
        self.replayed = self.replayed or replayed
        if self.state is None:
            self.state = "queued"
        if not self.accepted.done():
            self.accepted.set_result(id)

    def observe(self, inv: Invocation) -> None:
        """Takes in what an invocation resource tells (REST sees resources)."""
        if not self.accepted.done():
            self.accept(inv["id"], inv.get("task"))
        if inv.get("task"):
            self.task = inv["task"]
        self.state = inv.get("state", self.state)
        children = inv.get("children")
        if isinstance(children, list):
            self.children = list(children)

    def finish(self, inv: Invocation) -> None:
        if self.settled:
            return
        self.observe(inv)
        self.done.set_result(inv)

    def fail(self, err: BaseException) -> None:
        if self.settled:
            return
        if not self.accepted.done():
            self.accepted.set_exception(err)
        self.done.set_exception(err)

    def abort(self) -> None:
        """Cancels the invocation: its final state arrives as the outcome."""
        if self.settled or self.aborted:
            return
        self.aborted = True
        if self.on_abort is not None:
            self.on_abort()
        else:
            self.fail(_cancelled_before_start())


class Handle:
    """A started invocation: its :attr:`id`, its result, its cancel.

    ``await handle`` is ``await handle.result()``.
    """

    def __init__(self, op: _Op) -> None:
        self._op = op

    @property
    def id(self) -> str:
        """The invocation's id, usable with REST and :meth:`AtasksClient.get` too."""
        assert self._op.id is not None
        return self._op.id

    @property
    def ns(self) -> str:
        """The invocation's namespace."""
        return self._op.ns

    @property
    def task(self) -> str | None:
        """The task's name (``None`` for a subscription until the gateway told it)."""
        return self._op.task

    @property
    def replayed(self) -> bool:
        """Whether its idempotency key named an invocation started before."""
        return self._op.replayed

    @property
    def state(self) -> str | None:
        """The latest state known: ``queued`` (or ``scheduled``, a delayed
        call waiting for its time), ``running``, then final."""
        return self._op.state

    @property
    def children(self) -> list[str]:
        """Ids of the child invocations it awaited, as far as known."""
        return list(self._op.children)

    @property
    def invocation(self) -> Invocation | None:
        """The final invocation resource once it ended, else ``None``."""
        d = self._op.done
        return d.result() if d.done() and d.exception() is None else None

    def done(self) -> bool:
        """Whether the outcome arrived."""
        return self._op.settled

    async def result(self) -> Any:
        """Waits for the task's result; raises :class:`AtasksError` when the
        invocation failed, was cancelled or timed out. Cancelling the awaiter
        stops waiting; it does not cancel the invocation (:meth:`cancel` does)."""
        return _result_of(await asyncio.shield(self._op.done))

    async def wait(self) -> Invocation:
        """Waits for the final invocation resource, whatever its state; raises
        :class:`AtasksError` only when the outcome cannot be known."""
        return await asyncio.shield(self._op.done)

    async def cancel(self) -> Invocation:
        """Cancels the invocation and its children; returns the final resource
        (``state`` ``cancelled``, or whatever final state it reached first).
        Idempotent."""
        self._op.abort()
        return await asyncio.shield(self._op.done)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result().__await__()

    def __repr__(self) -> str:
        return f"<Handle {self._op.ns}/{self._op.task} id={self._op.id} state={self._op.state}>"


class TaskRef:
    """A task of a namespace, callable like a coroutine function:
    ``await add(a=2, b=3)``. Keyword arguments become the JSON object input;
    a single positional argument is the input as it is; none is ``null``."""

    def __init__(self, client: AtasksClient, ns: str, name: str, options: dict[str, Any]) -> None:
        self.client = client
        self.ns = ns
        self.name = name
        self._options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Calls the task; the coroutine returns its result."""
        return self.client.call(self.ns, self.name, _input_of(args, kwargs), **self._options)

    async def start(self, *args: Any, **kwargs: Any) -> Handle:
        """Starts the task; returns a :class:`Handle` once the gateway accepted it."""
        return await self.client.start(self.ns, self.name, _input_of(args, kwargs), **self._options)

    def __repr__(self) -> str:
        return f"<TaskRef {self.ns}/{self.name}>"


class _WsConnection:
    """One WebSocket to /v1/ws carrying many ops, by ref."""

    def __init__(self, client: AtasksClient, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._client = client
        self._ws = ws
        self.ops: dict[str, _Op] = {}
        self.closed = False
        self._send_lock = asyncio.Lock()
        self._reader = asyncio.ensure_future(self._read())

    async def send(self, text: str) -> None:
        if self.closed:
            raise unavailable("the WebSocket connection is closed")
        async with self._send_lock:
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await self._ws.send_str(text)
            except TimeoutError:
                await self.close(1008, "send timed out")
                raise unavailable(f"sending over the WebSocket took more than {SEND_TIMEOUT:g}s") from None
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as err:
                raise unavailable(f"sending over the WebSocket: {err}") from err

    async def start(self, ref: str, op: _Op, frame: dict[str, Any], input_json: str | None = None) -> None:
        """Sends op's call or subscribe frame under ref."""
        text = _dumps({**frame, "ref": ref})
        if input_json is not None:
            text = text[:-1] + ',"input":' + input_json + "}"
        self.ops[ref] = op
        op.on_abort = lambda: self._client._spawn_cleanup(self._cancel(ref))
        try:
            await self.send(text)
        except BaseException:
            self.ops.pop(ref, None)
            raise

    async def _cancel(self, ref: str) -> None:
        if self.closed or ref not in self.ops:
            return  # the outcome arrived, or the close hands the op to REST
        try:
            await self.send(_dumps({"type": "cancel", "ref": ref}))
        except AtasksError as err:
            log.debug("atasks_client: cancel of ref %s not sent: %s", ref, err)

    def take_ops(self) -> list[_Op]:
        ops = list(self.ops.values())
        self.ops.clear()
        return ops

    async def close(self, code: int = 1000, reason: str = "client closed") -> None:
        try:
            await self._ws.close(code=code, message=reason.encode())
        except Exception as err:  # already closing or failed
            log.debug("atasks_client: closing the WebSocket: %r", err)
        if not self._reader.done():
            done, _ = await asyncio.wait({self._reader}, timeout=CLOSE_GRACE)
            if not done:
                self._reader.cancel()

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        self._message(msg.data)
                    except Exception:  # a bug: keep the other calls going
                        log.exception("atasks_client: handling a WebSocket message")
                # The protocol is text frames only; anything else is ignored.
        except Exception as err:
            log.debug("atasks_client: reading the WebSocket: %r", err)
        finally:
            self._closed()

    def _message(self, data: str) -> None:
        try:
            m = json.loads(data)
        except ValueError:
            return
        if not isinstance(m, dict):
            return
        ref = m["ref"] if isinstance(m.get("ref"), str) else ""
        op = self.ops.get(ref) if ref else None
        kind = m.get("type")
        if kind == "accepted":
            if op is not None and op.id is None and isinstance(m.get("id"), str):
                op.accept(m["id"], m.get("task"), bool(m.get("replayed")))
        elif kind == "state":
            if op is None:
                return
            if isinstance(m.get("state"), str):
                op.state = m["state"]
            if isinstance(m.get("child"), str):
                op.children.append(m["child"])
        elif kind == "result":
            if op is None:
                return
            del self.ops[ref]
            inv = m.get("invocation")
            if isinstance(inv, dict) and isinstance(inv.get("id"), str) and is_final(inv.get("state")):
                op.finish(inv)
            else:
                op.fail(AtasksError("bad_response", "the gateway's result message holds no final invocation"))
        elif kind == "error":
            err = AtasksError.from_wire(m.get("error"))
            # An error about a call or subscription not yet under way means it
            # did not start; one about a later frame (a cancel) changes nothing.
            if op is not None and not op.settled and (op.id is None or op.kind == "subscribe") and op.state is None:
                del self.ops[ref]
                op.fail(err)
                return
            # unknown_ref: a cancel crossed the call's result; harmless.
            level = logging.DEBUG if err.code == "unknown_ref" else logging.WARNING
            log.log(level, "atasks_client: the gateway refused a frame (ref %r): %s", ref, err)

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        code = self._ws.close_code
        self._client._ws_lost(self, self.take_ops(), code)


class AtasksClient:
    """Calls tasks through an atasks gateway, from asyncio.

    ::

        async with AtasksClient("http://127.0.0.1:8080") as client:
            add = client.task("default", "demo.add")
            print(await add(a=2, b=3))  # 5

    Args:
        url: the gateway's base URL, ``http://host:port``. Defaults to
            ``http://127.0.0.1:8080``.
        transport: ``"auto"`` (default: one shared WebSocket, REST when it
            cannot be opened), ``"ws"`` or ``"rest"``.
        headers: extra HTTP headers for every request and the WebSocket's
            upgrade (e.g. ``Authorization``).
        poll_wait: how long each REST long-poll waits. Defaults to 30 s; the
            gateway caps it at its ``--max-wait`` (60 s).
        connect_timeout: bounds opening a TCP connection or the WebSocket.
            Defaults to 10 s.
        ws_retry: in ``"auto"`` mode, after the WebSocket failed to open,
            calls go over REST for this long before it is tried again.
            Defaults to 10 s.

    A client belongs to the event loop it is first used in. Close it
    (``async with``, or :meth:`close`) to release its connections.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        transport: Transport = "auto",
        headers: Mapping[str, str] | None = None,
        poll_wait: Duration = 30.0,
        connect_timeout: float = 10.0,
        ws_retry: float = 10.0,
    ) -> None:
        self._base = _base_url(url)
        if transport not in _TRANSPORTS:
            raise ValueError(f"transport must be 'auto', 'ws' or 'rest', got {transport!r}")
        self._transport: Transport = transport
        self._headers = dict(headers or {})
        pw = duration(poll_wait, "poll_wait")
        if pw is None:
            raise ValueError("poll_wait: want a duration")
        self._poll_wait = pw
        self._connect_timeout = float(connect_timeout)
        self._ws_retry = float(ws_retry)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._conn: _WsConnection | None = None
        self._connecting: asyncio.Future[_WsConnection] | None = None
        self._ws_down_until = 0.0  # monotonic; until then "auto" goes straight to REST
        self._ref = 0
        self._drivers: dict[asyncio.Task[None], _Op | None] = {}
        self._cleanup: set[asyncio.Task[None]] = set()

    # -- public API ---------------------------------------------------------

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return self._base

    @property
    def transport(self) -> Literal["ws", "rest"]:
        """How the next call would go: ``"ws"`` when a WebSocket is open or
        worth trying, else ``"rest"``."""
        if self._transport == "rest":
            return "rest"
        if self._conn is not None and not self._conn.closed:
            return "ws"
        if self._transport == "ws":
            return "ws"
        return "ws" if time.monotonic() >= self._ws_down_until else "rest"

    async def __aenter__(self) -> AtasksClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def task(
        self,
        ns: str,
        name: str,
        *,
        timeout: Duration | None = None,
        delay: Duration | None = None,
        wait: Duration | None = None,
        transport: Transport | None = None,
    ) -> TaskRef:
        """Returns task ``name`` of namespace ``ns`` as an awaitable callable:
        ``await client.task("default", "demo.add")(a=2, b=3)``. The options
        apply to each of its calls, as in :meth:`call`."""
        options: dict[str, Any] = {"timeout": timeout, "delay": delay, "wait": wait, "transport": transport}
        return TaskRef(self, ns, name, options)

    async def call(
        self,
        ns: str,
        task: str,
        input: Any = None,
        *,
        timeout: Duration | None = None,
        delay: Duration | None = None,
        wait: Duration | None = None,
        idempotency_key: str | None = None,
        detach: bool = False,
        transport: Transport | None = None,
    ) -> Any:
        """Invokes ``task`` of namespace ``ns`` with ``input`` (any JSON value)
        and returns its result.

        Cancelling the awaiting asyncio task cancels the invocation (and its
        children) at the gateway.

        Args:
            timeout: the invocation's deadline (seconds, timedelta or
                ``"5s"``): when it passes, it ends ``timed_out`` (error code
                ``timeout``).
            delay: delays the call (seconds, timedelta or ``"72h"``, up to
                30 days): the invocation is ``scheduled`` and runs no earlier
                than its ``run_at``, the gateway's time plus ``delay``;
                cancelling it before then means it never runs. A
                ``timeout`` ending before then is refused (``bad_request``
                over REST, ``bad_frame`` over the WebSocket).
            wait: REST only: how long the first request waits for the outcome
                before the client long-polls (default 0.2 s, so that a cancel
                soon knows the invocation's id).
            idempotency_key: makes retries safe: the same key (per namespace)
                answers the invocation it started.
            detach: over the WebSocket, the invocation goes on if the
                connection is lost (the client then follows it over REST).
            transport: this call's transport instead of the client's.

        Raises:
            AtasksError: the invocation failed, was cancelled or timed out
                (``err.invocation`` is the final resource), the gateway
                refused the call (``task_not_found``, ``bad_input`` for an
                input that does not fit the task's schema, with
                ``details["errors"]`` naming each field at fault, …), it
                cannot be reached (``unavailable``), or the input cannot be
                encoded as JSON (``bad_input``, before anything is sent).
        """
        op = self._begin(ns, task, input, timeout, delay, wait, idempotency_key, detach, transport)
        try:
            inv = await asyncio.shield(op.done)
        except asyncio.CancelledError:
            op.abort()
            raise
        return _result_of(inv)

    async def start(
        self,
        ns: str,
        task: str,
        input: Any = None,
        *,
        timeout: Duration | None = None,
        delay: Duration | None = None,
        wait: Duration | None = None,
        idempotency_key: str | None = None,
        detach: bool = False,
        transport: Transport | None = None,
    ) -> Handle:
        """Invokes the task as :meth:`call` does and returns a :class:`Handle`
        once the gateway accepted it: ``handle.id``, ``await
        handle.result()``, ``await handle.cancel()``. Cancelling the awaiter
        of ``start`` itself cancels the invocation."""
        op = self._begin(ns, task, input, timeout, delay, wait, idempotency_key, detach, transport)
        try:
            await asyncio.shield(op.accepted)
        except asyncio.CancelledError:
            op.abort()
            raise
        return Handle(op)

    async def subscribe(self, ns: str, id: str, *, transport: Transport | None = None) -> Handle:
        """Follows invocation ``id`` of namespace ``ns``, started anywhere (REST,
        another client, before a restart). Returns a :class:`Handle` at once;
        an unknown id makes its ``result()`` raise ``invocation_not_found``.
        Its ``cancel()`` cancels the invocation."""
        mode = self._mode(transport)
        self._bind()
        op = _Op("subscribe", ns, None, id=id)
        frame = {"type": "subscribe", "ns": ns, "id": id}
        self._dispatch(op, mode, lambda conn: conn.start(self._next_ref(), op, frame), lambda: self._rest_follow(op))
        return Handle(op)

    async def get(self, ns: str, id: str, *, wait: Duration | None = None) -> Invocation:
        """Returns invocation ``id`` of namespace ``ns``; with ``wait``, once it
        is final or ``wait`` has passed."""
        w = duration(wait, "wait")
        path = f"/v1/ns/{_enc(ns)}/invocations/{_enc(id)}"
        if w is not None:
            path += "?" + urllib.parse.urlencode({"wait": w[0]})
        body, _ = await self._request("GET", path, wait=w[1] if w else 0.0)
        return _check_invocation("GET", self._base + path, body)

    async def cancel(self, ns: str, id: str) -> Invocation:
        """Cancels invocation ``id`` of namespace ``ns`` (and its children);
        returns it once final. Idempotent."""
        path = f"/v1/ns/{_enc(ns)}/invocations/{_enc(id)}"
        body, _ = await self._request("DELETE", path, wait=CANCEL_WAIT)
        return _check_invocation("DELETE", self._base + path, body)

    async def namespaces(self) -> list[str]:
        """The namespaces the gateway serves."""
        body, _ = await self._request("GET", "/v1/ns")
        return list(body["namespaces"])

    async def tasks(self, ns: str) -> list[dict[str, Any]]:
        """The tasks served in namespace ``ns``: ``[{"name", "codec", "servers",
        "schema"}]``, ``schema`` being ``{"input": …, "output": …}``, the JSON
        Schemas of the task's input and result."""
        body, _ = await self._request("GET", f"/v1/ns/{_enc(ns)}/tasks")
        return list(body["tasks"])

    async def close(self) -> None:
        """Closes the WebSocket (the gateway then cancels its calls that were
        not detached) and stops every wait: calls still pending raise
        ``unavailable``. Cancels on their way get up to 5 s to reach the
        gateway first. The client can be used again afterwards."""
        # Let cancellations already requested (task.cancel() just before
        # close()) reach their calls, so that their cancels are sent.
        await asyncio.sleep(0)
        pending = set(self._cleanup) | {t for t, op in self._drivers.items() if op is not None and op.aborted}
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_GRACE)
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        self._connecting = None
        conn, self._conn = self._conn, None
        if conn is not None:
            for op in conn.take_ops():
                op.fail(_closed())
            await conn.close()
        drivers = list(self._drivers)
        for t in drivers:
            t.cancel()
        for t in self._cleanup:
            t.cancel()
        rest = drivers + list(self._cleanup)
        if rest:
            await asyncio.wait(rest, timeout=CLOSE_GRACE)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._loop = None

    def __repr__(self) -> str:
        return f"<AtasksClient {self._base} transport={self._transport}>"

    # -- calls ----------------------------------------------------------------

    def _bind(self) -> None:
        """Binds the client to the running event loop at its first use (again
        after close), and refuses another loop while it holds connections."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._session is not None or self._conn is not None or self._drivers or self._cleanup:
            raise RuntimeError(
                "AtasksClient: used from another event loop than the one it works in; "
                "create one client per event loop, or close it first"
            )
        self._loop = loop

    def _mode(self, transport: Transport | None) -> Transport:
        mode = self._transport if transport is None else transport
        if mode not in _TRANSPORTS:
            raise ValueError(f"transport must be 'auto', 'ws' or 'rest', got {mode!r}")
        return mode

    def _next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    def _begin(
        self,
        ns: str,
        task: str,
        input: Any,
        timeout: Duration | None,
        delay: Duration | None,
        wait: Duration | None,
        idempotency_key: str | None,
        detach: bool,
        transport: Transport | None,
    ) -> _Op:
        if not isinstance(ns, str) or not ns:
            raise ValueError(f"ns: want a namespace name, got {ns!r}")
        if not isinstance(task, str) or not task:
            raise ValueError(f"task: want a task name, got {task!r}")
        mode = self._mode(transport)
        self._bind()
        input_json = _encode_input(input)
        t = duration(timeout, "timeout")
        d = duration(delay, "delay")
        if d is not None and d[1] == 0:
            d = None  # no delay
        if d is not None and d[1] > MAX_DELAY:
            raise ValueError(f"delay: at most 30 days, got {delay!r}")
        if d is not None and t is not None and 0 < t[1] < d[1]:
            # the gateway refuses it, over REST and WebSocket with other codes
            raise ValueError(f"timeout {timeout!r} ends before the call is to run (delay {delay!r})")
        w = duration(wait, "wait")
        op = _Op("call", ns, task, detach=detach)
        frame: dict[str, Any] = {"type": "call", "ns": ns, "task": task}
        if t is not None:
            frame["timeout"] = t[0]
        if d is not None:
            frame["delay"] = d[0]
        if idempotency_key:
            frame["idempotency_key"] = idempotency_key
        if detach:
            frame["detach"] = True
        self._dispatch(
            op,
            mode,
            lambda conn: conn.start(self._next_ref(), op, frame, input_json),
            lambda: self._rest_call(op, input_json, t, d, w, idempotency_key),
        )
        return op

    def _dispatch(
        self,
        op: _Op,
        mode: Transport,
        over_ws: Callable[[_WsConnection], Coroutine[Any, Any, None]],
        over_rest: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Runs op over the WebSocket when the mode allows and it opens, else
        over REST, in a driver task."""
        use_ws = mode == "ws" or (mode == "auto" and time.monotonic() >= self._ws_down_until)
        self._spawn(self._drive(op, mode, use_ws, over_ws, over_rest), op)

    async def _drive(
        self,
        op: _Op,
        mode: Transport,
        use_ws: bool,
        over_ws: Callable[[_WsConnection], Coroutine[Any, Any, None]],
        over_rest: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        try:
            if not use_ws:
                await over_rest()
                return
            try:
                conn = await self._connect()
            except AtasksError as err:
                if mode == "ws":
                    op.fail(err)
                elif op.aborted:
                    op.fail(_cancelled_before_start())
                else:
                    await over_rest()
                return
            if op.aborted or op.settled:
                op.fail(_cancelled_before_start())
                return
            await over_ws(conn)
        except asyncio.CancelledError:
            op.fail(_closed())
            raise
        except AtasksError as err:
            op.fail(err)
        except Exception as err:  # a bug: do not leave the caller waiting
            log.exception("atasks_client: a call failed unexpectedly")
            op.fail(AtasksError("internal", f"atasks_client: {err!r}"))

    def _spawn(self, coro: Coroutine[Any, Any, None], op: _Op | None) -> None:
        t = asyncio.ensure_future(coro)
        self._drivers[t] = op
        t.add_done_callback(lambda t: self._drivers.pop(t, None))
        t.add_done_callback(_retrieve)

    def _spawn_cleanup(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.ensure_future(coro)
        self._cleanup.add(t)
        t.add_done_callback(self._cleanup.discard)
        t.add_done_callback(_retrieve)

    # -- WebSocket --------------------------------------------------------------

    async def _connect(self) -> _WsConnection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open_ws())
            self._connecting.add_done_callback(_retrieve)
        return await asyncio.shield(self._connecting)

    async def _open_ws(self) -> _WsConnection:
        url = yarl.URL(self._base.replace("http", "ws", 1) + "/v1/ws")
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._session_().ws_connect(
                    url,
                    headers=self._headers,
                    autoping=True,
                    heartbeat=HEARTBEAT,
                    max_msg_size=MAX_MESSAGE,
                    timeout=CLOSE_GRACE,
                )
        except aiohttp.WSServerHandshakeError as err:
            self._ws_down_until = time.monotonic() + self._ws_retry
            raise unavailable(f"WebSocket {url}: the gateway refused the upgrade: {err.status} {err.message}") from None
        except TimeoutError:
            self._ws_down_until = time.monotonic() + self._ws_retry
            raise unavailable(f"WebSocket {url}: not open within {self._connect_timeout:g}s") from None
        except (aiohttp.ClientError, OSError) as err:
            self._ws_down_until = time.monotonic() + self._ws_retry
            raise unavailable(f"WebSocket {url}: {err}") from None
        conn = _WsConnection(self, ws)
        self._conn = conn
        return conn

    def _ws_lost(self, conn: _WsConnection, ops: list[_Op], code: int | None) -> None:
        """Handles the ops of a WebSocket that closed: the gateway goes on with
        subscriptions, detached calls and cancelled ones (whose final state is
        wanted), which REST follows; it cancelled the others."""
        if self._conn is conn:
            self._conn = None
        for op in ops:
            if op.settled:
                continue
            if op.id is not None and (op.kind == "subscribe" or op.detach or op.aborted):
                op.on_abort = _noop  # the follow sees op.aborted
                self._spawn(self._follow_driver(op), op)
            else:
                op.fail(unavailable(f"the WebSocket connection closed (code {code}) before the outcome arrived"))

    async def _follow_driver(self, op: _Op) -> None:
        try:
            await self._rest_follow(op)
        except asyncio.CancelledError:
            op.fail(_closed())
            raise
        except AtasksError as err:
            op.fail(err)

    # -- REST -------------------------------------------------------------------

    async def _rest_call(
        self,
        op: _Op,
        input_json: str,
        timeout: tuple[str, float] | None,
        delay: tuple[str, float] | None,
        wait: tuple[str, float] | None,
        idempotency_key: str | None,
    ) -> None:
        """POST ?wait=, then long-poll until final."""
        op.on_abort = _noop  # an abort during the POST is seen when it answers
        first = wait or duration(FIRST_WAIT, "wait")
        assert first is not None
        q = {"wait": first[0]}
        if timeout is not None:
            q["timeout"] = timeout[0]
        if delay is not None:
            q["delay"] = delay[0]
        path = f"/v1/ns/{_enc(op.ns)}/tasks/{_enc(op.task or '')}?{urllib.parse.urlencode(q)}"
        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            # Not cancelled by an abort: the answer brings the id to cancel.
            body, resp_headers = await self._request("POST", path, body=input_json.encode(), headers=headers, wait=first[1])
            inv = _check_invocation("POST", self._base + path, body)
        except AtasksError as err:
            op.fail(_cancelled_before_start() if op.aborted else err)
            return
        op.replayed = resp_headers.get("Idempotent-Replayed") == "true"
        op.observe(inv)
        if is_final(inv["state"]):
            op.finish(inv)
            return
        await self._rest_follow(op)

    async def _rest_follow(self, op: _Op) -> None:
        """Long-polls invocation op.id until it is final; an abort of op sends
        DELETE, whose answer is the final resource."""
        assert op.id is not None
        path = f"/v1/ns/{_enc(op.ns)}/invocations/{_enc(op.id)}"
        url = self._base + path
        wait_text, wait_s = self._poll_wait
        op.on_abort = _noop
        while not op.settled and not op.aborted:
            poll = asyncio.ensure_future(self._request("GET", f"{path}?wait={_enc(wait_text)}", wait=wait_s))
            poll.add_done_callback(_retrieve)
            op.on_abort = poll.cancel
            try:
                await asyncio.wait({poll})
            except asyncio.CancelledError:
                poll.cancel()
                raise
            finally:
                op.on_abort = _noop
            if poll.cancelled():
                break  # aborted
            inv = _check_invocation("GET", url, poll.result()[0])
            op.observe(inv)
            if is_final(inv["state"]):
                op.finish(inv)
                return
        if op.aborted and not op.settled:
            body, _ = await self._request("DELETE", path, wait=CANCEL_WAIT)
            op.finish(_check_invocation("DELETE", url, body))

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            )
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        wait: float = 0.0,
    ) -> tuple[Any, Mapping[str, str]]:
        """Makes one request and returns its decoded JSON body and headers; a
        problem+json answer or a failure to connect raises AtasksError."""
        self._bind()
        url = self._base + path
        h = {"Accept": "application/json", **self._headers, **(headers or {})}
        total = min(wait, 60.0) + REQUEST_MARGIN
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=self._connect_timeout)
        try:
            async with self._session_().request(
                method, yarl.URL(url, encoded=True), data=body, headers=h, timeout=timeout
            ) as resp:
                raw = await resp.read()
                status, reason, resp_headers = resp.status, resp.reason or "", resp.headers
        except TimeoutError:
            raise unavailable(f"{method} {url}: no answer within {total:g}s") from None
        except aiohttp.ClientError as err:
            raise unavailable(f"{method} {url}: {err}") from err
        parsed: Any
        try:
            parsed = json.loads(raw) if raw else None
            is_json = True
        except ValueError:
            parsed, is_json = None, False
        if not 200 <= status < 300:
            raise AtasksError.from_problem(status, reason, parsed)
        if not is_json:
            raise AtasksError("bad_response", f"{method} {url}: the answer is not JSON (is this an atasks gateway?)")
        return parsed, resp_headers
