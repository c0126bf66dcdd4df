#!/usr/bin/python3
"""A minimal atasks server (docs/PROTOCOL.md §12), with the stdlib and pika.

Serves py.upper (a string, upper-cased) and py.refuse (always fails with
the typed error "refused") in namespace $ATASKS_NAMESPACE (default
"default") of installation $ATASKS_PREFIX (default "atasks") on the broker
at $ATASKS_AMQP_URL. It leaves out what §12 allows: the dead-letter queue,
cancels, leases, retries, running states, activity and reconnecting.
"""
import base64
import datetime
import json
import os
import re
import signal
import socket
import sys
import uuid

import pika

URL = os.environ.get("ATASKS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
B = os.environ.get("ATASKS_PREFIX", "atasks") + "." + os.environ.get("ATASKS_NAMESPACE", "default")
SERVER, WORKER = uuid.uuid4().hex, "%s:%d" % (socket.gethostname(), os.getpid())
DELIVERY_LIMIT = 5
TASK_QUEUE_ARGS = {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT - 1,
                   "x-dead-letter-exchange": B + ".dlx", "x-dead-letter-strategy": "at-least-once",
                   "x-overflow": "reject-publish"}


class TaskError(Exception):
    def __init__(self, code, message, details=None, retryable=False):
        super().__init__(message)
        self.wire = {"code": code, "message": message, "retryable": retryable}
        if details is not None:
            self.wire["details"] = details


def upper(s):
    if not isinstance(s, str):
        raise TaskError("bad_input", "py.upper takes a string")
    return s.upper()


def refuse(s):
    raise TaskError("refused", "py.refuse refuses %r" % (s,), {"input": s})


TASKS = {"py.upper": upper, "py.refuse": refuse}


def header_int(h, k):  # §2: any integer type, or decimal digits; else absent
    v = h.get(k)
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*", v):
        v = int(v)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def parse_time(s):  # RFC 3339, fractional seconds cut to microseconds
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        raise ValueError(s)
    frac = "." + (m.group(2) or "0")[:6].ljust(6, "0")
    return datetime.datetime.fromisoformat(m.group(1) + frac + m.group(3).replace("Z", "+00:00"))


def codec_of(content_type):  # §2: no content type is JSON; case and parameters ignored
    media = (content_type or "").split(";")[0].strip().lower()
    return media.removeprefix("application/") if media else "json"


def answer(task, props, h, body):
    """The reply envelope (§5) to the request, following §4's steps 2 to 9."""
    rid = props.message_id or props.correlation_id
    attempt = max(header_int(h, "atasks-attempt"), 1) + header_int(h, "x-delivery-count")
    made_up = {"id": rid, "task": task, "state": "failed"}  # no worker, no attempt: it did not run
    try:
        deadline = parse_time(h["atasks-deadline"]) if "atasks-deadline" in h else None
    except (TypeError, ValueError):
        return dict(made_up, error={"code": "bad_input", "message": "bad atasks-deadline header"})
    if attempt - header_int(h, "atasks-retries") - header_int(h, "atasks-given-back") > DELIVERY_LIMIT:
        return dict(made_up, error={"code": "poison", "message": "delivered too many times"})
    if deadline and deadline <= datetime.datetime.now(datetime.timezone.utc):
        return dict(made_up, state="timed_out", error={"code": "timeout", "message": "deadline passed"})
    codec = codec_of(props.content_type)
    if codec != "json":
        return dict(made_up, error={"code": "unknown_codec", "message": "no codec named %r" % codec})
    ran = {"id": rid, "task": task, "worker": WORKER, "attempt": attempt}
    try:
        arg = json.loads(body)
    except ValueError as e:
        return dict(ran, state="failed", error={"code": "bad_input", "message": "the input is not JSON: %s" % e})
    try:
        out = TASKS[task](arg)
        return dict(ran, state="succeeded", codec="json", body=base64.b64encode(json.dumps(out, ensure_ascii=False).encode()).decode())
    except TaskError as e:
        return dict(ran, state="failed", error=e.wire)
    except Exception as e:  # noqa: BLE001 - any other failure is the task's
        return dict(ran, state="failed", error={"code": "task_failed", "message": str(e)})


def main():
    params = pika.URLParameters(URL)
    params.client_properties = {"connection_name": "minimal_worker.py " + WORKER}
    conn = pika.BlockingConnection(params)
    pub, ch = conn.channel(), conn.channel()
    pub.confirm_delivery()  # basic_publish now waits for the broker's ack, and raises on a nack

    def publish(exchange, key, typ, body, mode=1, **props):
        pub.basic_publish(exchange, key, json.dumps(body), pika.BasicProperties(
            content_type="application/json; charset=utf-8", delivery_mode=mode, type=typ, app_id="atasks", **props))

    ch.exchange_declare(B + ".tasks", "direct", durable=True)
    for x in ("control", "dlx"):
        ch.exchange_declare(B + "." + x, "fanout", durable=True)
    ch.queue_declare(B + ".dead", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(B + ".dead", B + ".dlx", "")
    ch.basic_qos(prefetch_count=1)
    for task in TASKS:
        ch.queue_declare(B + ".task." + task, durable=True, arguments=TASK_QUEUE_ARGS)
        ch.queue_bind(B + ".task." + task, B + ".tasks", task)

        def on_request(ch, method, props, body, task=task):
            rep = answer(task, props, props.headers or {}, body)
            if rep["id"] and props.reply_to:  # else it cannot be answered: drop it
                # Raises if the broker refuses the reply: the request stays unacked.
                publish("", props.reply_to, "reply", rep, mode=2, correlation_id=rep["id"])
            ch.basic_ack(method.delivery_tag)  # only once the reply is confirmed

        ch.basic_consume(B + ".task." + task, on_request)

    def announce():
        publish(B + ".control", "", "announce",
                {"server": SERVER, "tasks": sorted(TASKS), "ttl_ms": 15000, "worker": WORKER, "codecs": ["json"]})

    control = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
    ch.queue_bind(control, B + ".control", "")
    ch.basic_consume(control, lambda _c, _m, props, _b: props.type == "query" and announce(), auto_ack=True)

    def every_5s():
        announce()
        conn.call_later(5, every_5s)

    every_5s()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("serving", ", ".join(sorted(TASKS)), "in", B, "as", SERVER, flush=True)
    try:
        ch.start_consuming()
    finally:
        if conn.is_open:
            publish(B + ".control", "", "leave", {"server": SERVER})
            conn.close()


if __name__ == "__main__":
    main()
