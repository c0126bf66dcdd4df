"""AtasksError: the one exception every failure of a call raises."""

from __future__ import annotations

from typing import Any

__all__ = ["AtasksError", "Invocation"]

#: An invocation resource, as the gateway answers it: ``id``, ``ns``,
#: ``task``, ``state`` (``scheduled``, ``queued``, ``running``, or final:
#: ``succeeded``, ``failed``, ``cancelled``, ``timed_out``), ``created_at``,
#: ``run_at`` (a delayed call's time), ``started_at``, ``finished_at``,
#: ``worker``, ``children``, and ``result`` or ``error``.
Invocation = dict[str, Any]


class AtasksError(Exception):
    """A failure of a call, whatever its origin, with the wire's error shape.

    It is raised for:

    - an invocation that ended ``failed``, ``cancelled`` or ``timed_out``:
      its typed error (the task's own ``code``, or ``panic``, ``bad_input``,
      ``cancelled``, ``timeout``, …), with the final resource in
      :attr:`invocation`;
    - an error of the gateway itself, a problem+json answer over REST or an
      ``error`` frame over the WebSocket (``task_not_found``,
      ``namespace_not_found``, ``invocation_not_found``, …): the same
      ``code`` either way; :attr:`status` is the HTTP status over REST;
    - a transport problem: ``unavailable`` (retryable), e.g. the gateway
      cannot be reached.

    Compare :attr:`code`::

        try:
            await client.call("default", "pay", order)
        except AtasksError as err:
            if err.code == "insufficient_funds":
                print(err.details["balance"])
    """

    code: str
    """Stable, machine-readable: ``task_not_found``, ``panic``, or the task's own."""
    message: str
    """What went wrong, for a human."""
    details: Any
    """Any JSON value the task attached; ``None`` when there is none. With
    ``bad_input``, ``{"errors": [{"pointer": "/a", "detail": "…"}, …]}``:
    each way the input does not fit the task (an RFC 6901 pointer into it,
    ``""`` for the whole input), whoever found it (the gateway or the
    worker) and whatever the transport. For the gateway's other errors over
    REST: the problem+json document."""
    retryable: bool
    """Whether trying again later may succeed."""
    status: int | None
    """The HTTP status of a gateway error answered over REST, else ``None``."""
    invocation: Invocation | None
    """The final invocation resource when the invocation itself failed, else ``None``."""

    def __init__(
        self,
        code: str,
        message: str = "",
        details: Any = None,
        retryable: bool = False,
        status: int | None = None,
        invocation: Invocation | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.details = details
        self.retryable = retryable
        self.status = status
        self.invocation = invocation

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def __repr__(self) -> str:
        fields = [f"{self.code!r}", f"{self.message!r}"]
        if self.details is not None:
            fields.append(f"details={self.details!r}")
        if self.retryable:
            fields.append("retryable=True")
        if self.status is not None:
            fields.append(f"status={self.status}")
        if self.invocation is not None:
            fields.append(f"invocation=<{self.invocation.get('state')} {self.invocation.get('id')}>")
        return f"AtasksError({', '.join(fields)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message, self.details, self.retryable, self.status, self.invocation))

    @property
    def state(self) -> str | None:
        """The final state of the failed invocation (``failed``, ``cancelled``,
        ``timed_out``), or ``None`` when no invocation ended (a gateway or
        transport error)."""
        return None if self.invocation is None else self.invocation.get("state")

    @classmethod
    def from_invocation(cls, inv: Invocation) -> AtasksError:
        """The error of a final invocation that did not succeed."""
        e = inv.get("error")
        if not isinstance(e, dict):
            state = inv.get("state", "failed")
            e = {"code": state, "message": f"invocation ended {state}"}
        return cls(
            str(e.get("code", "error")),
            str(e.get("message", "")),
            details=e.get("details"),
            retryable=bool(e.get("retryable", False)),
            invocation=inv,
        )

    @classmethod
    def from_wire(cls, e: Any, *, fallback: str = "the gateway refused the request") -> AtasksError:
        """The error of a WebSocket ``error`` frame's ``error`` object."""
        if not isinstance(e, dict):
            e = {}
        return cls(
            str(e.get("code") or "error"),
            str(e.get("message") or fallback),
            details=e.get("details"),
            retryable=bool(e.get("retryable", False)),
        )

    @classmethod
    def from_problem(cls, status: int, reason: str, body: Any) -> AtasksError:
        """The error of a non-2xx REST answer; ``body`` is its decoded JSON
        (a problem+json document), or ``None`` when it was not JSON. A
        problem with ``errors`` (``bad_input``) has the details an ``error``
        frame has for the same failure, ``{"errors": [...]}``; any other
        problem is its own details."""
        p = body if isinstance(body, dict) else {}
        code = p.get("code") or f"http_{status}"
        message = p.get("detail") or p.get("title") or f"{status} {reason}".strip()
        details: Any = p or None
        if isinstance(p.get("errors"), list):
            details = {"errors": p["errors"]}
        return cls(
            str(code),
            str(message),
            details=details,
            retryable=bool(p["retryable"]) if isinstance(p.get("retryable"), bool) else status == 503,
            status=status,
        )


def unavailable(message: str) -> AtasksError:
    """A transport problem: retryable."""
    return AtasksError("unavailable", message, retryable=True)
