"""BlockingClient: the asyncio client for synchronous programs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from ._client import CLOSE_GRACE, AtasksClient, Handle, Transport, _input_of
from ._duration import Duration
from ._errors import Invocation

__all__ = ["BlockingClient", "BlockingHandle", "BlockingTaskRef"]

T = TypeVar("T")


class BlockingClient:
    """Calls tasks from synchronous code: plain scripts, threads, WSGI apps.

    ::

        with BlockingClient("http://127.0.0.1:8080") as client:
            print(client.call("default", "demo.add", {"a": 2, "b": 3}))  # 5

    It runs an :class:`AtasksClient` on an event loop in a background thread
    of its own; every method blocks the calling thread until the answer, and
    any number of threads may call at once (the calls share one WebSocket).
    A ``KeyboardInterrupt`` (or any exception) that interrupts :meth:`call`
    cancels the invocation at the gateway. It takes the options of
    :class:`AtasksClient`. Close it (``with``, or :meth:`close`).
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
        self._client = AtasksClient(
            url,
            transport=transport,
            headers=headers,
            poll_wait=poll_wait,
            connect_timeout=connect_timeout,
            ws_retry=ws_retry,
        )
        self._closed = False
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="atasks-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _wait(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("BlockingClient is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("BlockingClient: a blocking call from its own event loop would deadlock")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()  # KeyboardInterrupt, a timeout: stop what it was doing
            raise

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return self._client.url

    @property
    def aio(self) -> AtasksClient:
        """The asyncio client underneath; use it only on :attr:`loop`."""
        return self._client

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop of the background thread."""
        return self._loop

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def task(
        self,
        ns: str,
        name: str,
        *,
        timeout: Duration | None = None,
        delay: Duration | None = None,
        wait: Duration | None = None,
        transport: Transport | None = None,
    ) -> BlockingTaskRef:
        """Returns task ``name`` of namespace ``ns`` as a function:
        ``client.task("default", "demo.add")(a=2, b=3)`` returns 5."""
        return BlockingTaskRef(self, ns, name, {"timeout": timeout, "delay": delay, "wait": wait, "transport": transport})

    def call(
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
        """Invokes the task and returns its result; raises :class:`AtasksError`.
        See :meth:`AtasksClient.call`."""
        return self._wait(
            self._client.call(
                ns,
                task,
                input,
                timeout=timeout,
                delay=delay,
                wait=wait,
                idempotency_key=idempotency_key,
                detach=detach,
                transport=transport,
            )
        )

    def start(
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
    ) -> BlockingHandle:
        """Invokes the task and returns a :class:`BlockingHandle` once the
        gateway accepted it."""
        h = self._wait(
            self._client.start(
                ns,
                task,
                input,
                timeout=timeout,
                delay=delay,
                wait=wait,
                idempotency_key=idempotency_key,
                detach=detach,
                transport=transport,
            )
        )
        return BlockingHandle(self, h)

    def subscribe(self, ns: str, id: str, *, transport: Transport | None = None) -> BlockingHandle:
        """Follows invocation ``id``, started anywhere; see :meth:`AtasksClient.subscribe`."""
        return BlockingHandle(self, self._wait(self._client.subscribe(ns, id, transport=transport)))

    def get(self, ns: str, id: str, *, wait: Duration | None = None) -> Invocation:
        """Returns invocation ``id``; with ``wait``, once final or after ``wait``."""
        return self._wait(self._client.get(ns, id, wait=wait))

    def cancel(self, ns: str, id: str) -> Invocation:
        """Cancels invocation ``id`` and returns it once final."""
        return self._wait(self._client.cancel(ns, id))

    def namespaces(self) -> list[str]:
        """The namespaces the gateway serves."""
        return self._wait(self._client.namespaces())

    def tasks(self, ns: str) -> list[dict[str, Any]]:
        """The tasks served in namespace ``ns``."""
        return self._wait(self._client.tasks(ns))

    def close(self) -> None:
        """Closes the client (as :meth:`AtasksClient.close`) and stops its thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._thread.is_alive() and threading.current_thread() is not self._thread:
                asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(4 * CLOSE_GRACE)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join(4 * CLOSE_GRACE)

    def __repr__(self) -> str:
        return f"<BlockingClient {self._client.url}>"


class BlockingHandle:
    """A started invocation, for synchronous code: :attr:`id`,
    :meth:`result`, :meth:`cancel`."""

    def __init__(self, client: BlockingClient, handle: Handle) -> None:
        self._client = client
        self._handle = handle

    @property
    def id(self) -> str:
        """The invocation's id."""
        return self._handle.id

    @property
    def ns(self) -> str:
        """The invocation's namespace."""
        return self._handle.ns

    @property
    def task(self) -> str | None:
        """The task's name."""
        return self._handle.task

    @property
    def replayed(self) -> bool:
        """Whether its idempotency key named an invocation started before."""
        return self._handle.replayed

    @property
    def state(self) -> str | None:
        """The latest state known."""
        return self._handle.state

    @property
    def invocation(self) -> Invocation | None:
        """The final invocation resource once it ended, else ``None``."""
        return self._handle.invocation

    def done(self) -> bool:
        """Whether the outcome arrived."""
        return self._handle.done()

    def result(self, timeout: float | None = None) -> Any:
        """Blocks until the task's result; raises :class:`AtasksError` when it
        failed, was cancelled or timed out. ``timeout`` (seconds) bounds the
        wait: :class:`TimeoutError` then, and the invocation goes on."""
        return self._client._wait(self._handle.result(), timeout)

    def wait(self, timeout: float | None = None) -> Invocation:
        """Blocks until the final invocation resource, whatever its state."""
        return self._client._wait(self._handle.wait(), timeout)

    def cancel(self) -> Invocation:
        """Cancels the invocation and its children; returns the final resource."""
        return self._client._wait(self._handle.cancel())

    def __repr__(self) -> str:
        return repr(self._handle).replace("<Handle", "<BlockingHandle", 1)


class BlockingTaskRef:
    """A task as a function: keyword arguments become the JSON object input,
    a single positional argument is the input as it is."""

    def __init__(self, client: BlockingClient, ns: str, name: str, options: dict[str, Any]) -> None:
        self.client = client
        self.ns = ns
        self.name = name
        self._options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the task and returns its result."""
        return self.client.call(self.ns, self.name, _input_of(args, kwargs), **self._options)

    def start(self, *args: Any, **kwargs: Any) -> BlockingHandle:
        """Starts the task; returns a :class:`BlockingHandle`."""
        return self.client.start(self.ns, self.name, _input_of(args, kwargs), **self._options)

    def __repr__(self) -> str:
        return f"<BlockingTaskRef {self.ns}/{self.name}>"
