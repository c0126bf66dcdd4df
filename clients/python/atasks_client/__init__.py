"""atasks_client: call atasks tasks through the gateway, from Python.

Asyncio::

    async with AtasksClient("http://127.0.0.1:8080") as client:
        add = client.task("default", "demo.add")
        print(await add(a=2, b=3))  # 5

Synchronous programs::

    with BlockingClient("http://127.0.0.1:8080") as client:
        print(client.call("default", "demo.add", {"a": 2, "b": 3}))  # 5

Every failure raises :class:`AtasksError` with the wire's error shape:
``code``, ``message``, ``details``, ``retryable`` (plus ``status`` and
``invocation``).
"""

from ._blocking import BlockingClient, BlockingHandle, BlockingTaskRef
from ._client import FINAL_STATES, AtasksClient, Handle, TaskRef, Transport, is_final
from ._duration import Duration
from ._errors import AtasksError, Invocation

__all__ = [
    "AtasksClient",
    "AtasksError",
    "BlockingClient",
    "BlockingHandle",
    "BlockingTaskRef",
    "Duration",
    "FINAL_STATES",
    "Handle",
    "Invocation",
    "TaskRef",
    "Transport",
    "is_final",
]

__version__ = "0.1.0"
