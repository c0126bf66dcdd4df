#!/usr/bin/env python3
"""The conformance runner of the Python client (conformance/README.md).

Reads ATASKS_GATEWAY_URL, ATASKS_CONFORMANCE_CASES and
ATASKS_CONFORMANCE_RUN; runs every case of cases.json with the asyncio client
over the WebSocket, then over REST; prints ``ok [ws] <name>`` or
``FAIL [rest] <name>: <why>`` per case and transport; exits 0 when all
passed, 1 when one failed, 2 when it could not run (a missing variable, an
unreadable file, a case with a field it does not know, no gateway).

    ATASKS_GATEWAY_URL=http://127.0.0.1:8080 \\
    ATASKS_CONFORMANCE_CASES=conformance/cases.json \\
    ATASKS_CONFORMANCE_RUN=$RANDOM /usr/bin/python3 clients/python/conformance.py
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from atasks_client import AtasksClient, AtasksError, Invocation  # noqa: E402
from atasks_client._duration import duration  # noqa: E402

CASE_LIMIT = 30.0  # seconds per case
TRANSPORTS = ("ws", "rest")

CASE_FIELDS = {
    "name",
    "ns",
    "task",
    "input",
    "input_repeat",
    "wait",
    "timeout",
    "delay",
    "cancel_after_ms",
    "idempotency_key",
    "parallel",
    "expect",
}
EXPECT_FIELDS = {"result", "echo", "error"}
ERROR_FIELDS = {"code", "message", "details", "retryable", "pointers"}
REPEAT_FIELDS = {"text", "times"}
TOP_FIELDS = {"version", "cases"}


class CannotRun(Exception):
    """The runner cannot run at all: exit 2."""


@dataclass
class Case:
    name: str
    ns: str
    task: str
    input: Any
    has_input: bool  # else the call is made without an input
    wait: str | None
    timeout: str | None
    delay: str | None
    delay_s: float  # delay in seconds, 0 without one
    cancel_after_ms: float | None
    idempotency_key: str | None
    parallel: int
    expect: dict[str, Any]


def _want(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise CannotRun(f"{where}: {what}")


def parse_cases(doc: Any) -> list[Case]:
    """Checks the cases file and returns its cases; raises CannotRun for
    anything it does not understand."""
    _want(isinstance(doc, dict), "cases file", "want a JSON object")
    unknown = set(doc) - TOP_FIELDS
    _want(not unknown, "cases file", f"unknown fields {sorted(unknown)}")
    _want(doc.get("version") == 1, "cases file", f"version {doc.get('version')!r}, want 1")
    raw = doc.get("cases")
    _want(isinstance(raw, list) and bool(raw), "cases file", "want a non-empty list of cases")
    cases, names = [], set()
    for i, c in enumerate(raw):
        where = f"case {i}"
        _want(isinstance(c, dict), where, "want an object")
        name = c.get("name")
        _want(isinstance(name, str) and bool(name), where, "want a name")
        where = f"case {name!r}"
        _want(name not in names, where, "duplicate name")
        names.add(name)
        unknown = set(c) - CASE_FIELDS
        _want(not unknown, where, f"unknown fields {sorted(unknown)}")
        ns = c.get("ns", "default")
        _want(isinstance(ns, str) and bool(ns), where, "ns: want a string")
        _want(isinstance(c.get("task"), str) and bool(c["task"]), where, "task: want a string")
        value = c.get("input")
        if "input_repeat" in c:
            _want("input" not in c, where, "input and input_repeat both given")
            rep = c["input_repeat"]
            _want(isinstance(rep, dict), where, "input_repeat: want an object")
            unknown = set(rep) - REPEAT_FIELDS
            _want(not unknown, where, f"input_repeat: unknown fields {sorted(unknown)}")
            _want(isinstance(rep.get("text"), str), where, "input_repeat.text: want a string")
            times = rep.get("times")
            _want(isinstance(times, int) and not isinstance(times, bool) and times >= 0, where, "input_repeat.times: want an integer >= 0")
            value = rep["text"] * times
        for field in ("wait", "timeout", "delay", "idempotency_key"):
            _want(c.get(field) is None or isinstance(c[field], str), where, f"{field}: want a string")
        delay_s = go_duration(c.get("delay"), where, "delay")
        cancel = c.get("cancel_after_ms")
        _want(cancel is None or (isinstance(cancel, (int, float)) and not isinstance(cancel, bool) and cancel >= 0), where, "cancel_after_ms: want a number >= 0")
        parallel = c.get("parallel", 1)
        _want(isinstance(parallel, int) and not isinstance(parallel, bool) and parallel >= 1, where, "parallel: want an integer >= 1")
        expect = c.get("expect")
        _want(isinstance(expect, dict), where, "expect: want an object")
        unknown = set(expect) - EXPECT_FIELDS
        _want(not unknown, where, f"expect: unknown fields {sorted(unknown)}")
        _want(len(expect) == 1, where, "expect: want exactly one of result, echo, error")
        if "echo" in expect:
            _want(expect["echo"] is True, where, "expect.echo: want true")
        if "error" in expect:
            e = expect["error"]
            _want(isinstance(e, dict), where, "expect.error: want an object")
            unknown = set(e) - ERROR_FIELDS
            _want(not unknown, where, f"expect.error: unknown fields {sorted(unknown)}")
            _want(isinstance(e.get("code"), str), where, "expect.error.code: want a string")
            _want("message" not in e or isinstance(e["message"], str), where, "expect.error.message: want a string")
            _want("retryable" not in e or isinstance(e["retryable"], bool), where, "expect.error.retryable: want true or false")
            ptrs = e.get("pointers", [])
            _want(isinstance(ptrs, list) and all(isinstance(p, str) for p in ptrs), where, "expect.error.pointers: want a list of strings")
        cases.append(
            Case(
                name=name,
                ns=ns,
                task=c["task"],
                input=value,
                has_input="input" in c or "input_repeat" in c,
                wait=c.get("wait"),
                timeout=c.get("timeout"),
                delay=c.get("delay"),
                delay_s=delay_s,
                cancel_after_ms=cancel,
                idempotency_key=c.get("idempotency_key"),
                parallel=parallel,
                expect=expect,
            )
        )
    return cases


def go_duration(value: str | None, where: str, field: str) -> float:
    """The seconds of a Go duration string; 0 for none."""
    if value is None:
        return 0.0
    try:
        d = duration(value, field)
    except ValueError as err:
        raise CannotRun(f"{where}: {err}") from None
    return 0.0 if d is None else d[1]


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers compare by value, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is None and b is None
    return type(a) is type(b) and a == b


def short(v: Any, limit: int = 160) -> str:
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= limit else s[:limit] + f"… ({len(s)} chars)"


@dataclass
class Outcome:
    id: str | None
    result: Any = None
    error: AtasksError | None = None
    took: float = 0.0  # seconds from the call's start to its outcome
    invocation: Invocation | None = None  # the final resource, when known

    def describe(self) -> str:
        if self.error is not None:
            return f"error {self.error.code!r} ({self.error.message})"
        return f"result {short(self.result)}"


async def run_once(client: AtasksClient, case: Case, key: str | None) -> Outcome:
    """One call of the case, cancelled after cancel_after_ms if it says so;
    took and invocation filled in."""
    began = time.monotonic()
    out = await call_once(client, case, key)
    out.took = time.monotonic() - began
    return out


async def call_once(client: AtasksClient, case: Case, key: str | None) -> Outcome:
    """One call of the case: over a handle, which has the final invocation,
    unless it is a plain call."""
    opts: dict[str, Any] = {"timeout": case.timeout, "delay": case.delay, "wait": case.wait, "idempotency_key": key}
    args = (case.input,) if case.has_input else ()
    if case.cancel_after_ms is None and key is None and case.delay is None:
        try:
            return Outcome(None, result=await client.call(case.ns, case.task, *args, **opts))
        except AtasksError as err:
            return Outcome(None, error=err)
    try:
        handle = await client.start(case.ns, case.task, *args, **opts)
    except AtasksError as err:
        return Outcome(None, error=err)
    if case.cancel_after_ms is not None:
        await asyncio.sleep(case.cancel_after_ms / 1000)
        await handle.cancel()
    try:
        return Outcome(handle.id, result=await handle.result(), invocation=handle.invocation)
    except AtasksError as err:
        return Outcome(handle.id, error=err, invocation=err.invocation)


def check(case: Case, out: Outcome) -> str | None:
    """Why out does not meet the case's expect, or None."""
    exp = case.expect
    if "result" in exp or "echo" in exp:
        want = exp["result"] if "result" in exp else case.input
        if out.error is not None:
            return f"got {out.describe()}, want result {short(want)}"
        if not json_equal(out.result, want):
            return f"got {out.describe()}, want result {short(want)}"
        return check_delay(case, out)
    want_err = exp["error"]
    if out.error is None:
        return f"got {out.describe()}, want error {want_err['code']!r}"
    err = out.error
    if err.code != want_err["code"]:
        return f"got {out.describe()}, want error code {want_err['code']!r}"
    if "message" in want_err and err.message != want_err["message"]:
        return f"error message {err.message!r}, want {want_err['message']!r}"
    if "details" in want_err and not json_equal(err.details, want_err["details"]):
        return f"error details {short(err.details)}, want {short(want_err['details'])}"
    if "retryable" in want_err and err.retryable != want_err["retryable"]:
        return f"error retryable {err.retryable}, want {want_err['retryable']}"
    if "pointers" in want_err:
        got = pointers(err.details)
        if got is None or sorted(got) != sorted(want_err["pointers"]):
            return f"error details {short(err.details)}: pointers {got!r}, want {want_err['pointers']!r}"
    return None


def check_delay(case: Case, out: Outcome) -> str | None:
    """Why a delayed call that succeeded ran too soon, or None: it must end
    no sooner than delay after it began, and its invocation start no
    earlier than its run_at."""
    if case.delay_s <= 0:
        return None  # no delay: the client sends none
    if out.took < case.delay_s:
        return f"a call delayed {case.delay} ended {out.took:.3f}s after it began: want no sooner"
    if out.invocation is None:
        return None
    run_at, started_at = out.invocation.get("run_at"), out.invocation.get("started_at")
    try:
        at, started = timestamp(run_at, "run_at"), timestamp(started_at, "started_at")
    except ValueError as err:
        return f"a call delayed {case.delay} succeeded, its invocation's {err} (run_at {run_at!r}, started_at {started_at!r})"
    if started < at:
        return f"a call delayed {case.delay} started at {started_at}, before its run_at {run_at}"
    return None


def timestamp(value: Any, field: str) -> datetime.datetime:
    """An RFC 3339 time of the gateway's; ValueError naming field when it is
    absent or not one."""
    if value is None:
        raise ValueError(f"{field} is missing")
    try:
        t = datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise ValueError(f"{field} is not an RFC 3339 time")
    return t


def pointers(details: Any) -> list[str] | None:
    """The pointers of a bad_input's details, ``{"errors": [{"pointer": …}]}``;
    None when they are not that."""
    errors = details.get("errors") if isinstance(details, dict) else None
    if not isinstance(errors, list) or not all(isinstance(e, dict) and isinstance(e.get("pointer"), str) for e in errors):
        return None
    return [e["pointer"] for e in errors]


async def run_case(client: AtasksClient, case: Case, run_id: str) -> str | None:
    """Runs one case; returns why it failed, or None."""
    if case.idempotency_key is not None:
        key = f"{case.idempotency_key}-{run_id}"
        ids = []
        for attempt in ("first", "second"):
            out = await run_once(client, case, key)
            why = check(case, out)
            if why:
                return f"{attempt} call: {why}"
            ids.append(out.id)
        if ids[0] is None or ids[0] != ids[1]:
            return f"the two calls with Idempotency-Key {key!r} name invocations {ids[0]!r} and {ids[1]!r}"
        return None
    outs = await asyncio.gather(*(run_once(client, case, None) for _ in range(case.parallel)))
    for i, out in enumerate(outs):
        why = check(case, out)
        if why:
            return why if case.parallel == 1 else f"call {i + 1} of {case.parallel}: {why}"
    return None


async def run_transport(url: str, transport: str, cases: list[Case], run_id: str) -> list[str | None]:
    async with AtasksClient(url, transport=transport) as client:  # type: ignore[arg-type]

        async def bounded(case: Case) -> str | None:
            try:
                async with asyncio.timeout(CASE_LIMIT):
                    return await run_case(client, case, run_id)
            except TimeoutError:
                return f"no outcome within {CASE_LIMIT:g}s"
            except Exception as err:  # the runner's own failure still names the case
                return f"{type(err).__name__}: {err}"

        return await asyncio.gather(*(bounded(c) for c in cases))


async def reachable(url: str) -> None:
    async with AtasksClient(url, transport="rest") as client:
        try:
            await client.namespaces()
        except AtasksError as err:
            raise CannotRun(f"the gateway at {url} does not answer: {err}") from None


async def main_async(url: str, cases: list[Case], run_id: str) -> int:
    await reachable(url)
    failed = False
    for transport in TRANSPORTS:
        whys = await run_transport(url, transport, cases, run_id)
        for case, why in zip(cases, whys):
            if why is None:
                print(f"ok [{transport}] {case.name}", flush=True)
            else:
                failed = True
                print(f"FAIL [{transport}] {case.name}: {why}", flush=True)
    return 1 if failed else 0


def main() -> int:
    try:
        url = os.environ.get("ATASKS_GATEWAY_URL", "")
        path = os.environ.get("ATASKS_CONFORMANCE_CASES", "")
        run_id = os.environ.get("ATASKS_CONFORMANCE_RUN") or uuid.uuid4().hex[:12]
        if not url:
            raise CannotRun("ATASKS_GATEWAY_URL is not set (e.g. http://127.0.0.1:8080)")
        if not path:
            raise CannotRun("ATASKS_CONFORMANCE_CASES is not set (the path of conformance/cases.json)")
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as err:
            raise CannotRun(f"reading {path}: {err}") from None
        cases = parse_cases(doc)
        try:
            AtasksClient(url)
        except ValueError as err:
            raise CannotRun(str(err)) from None
        return asyncio.run(main_async(url, cases, run_id))
    except CannotRun as err:
        print(f"conformance: cannot run: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
