"""A real gateway for the tests: ATASKS_GATEWAY_URL when set (nothing is
started), else the binary at ATASKS_GATEWAY_BIN, else one built here with
``go build ./cmd/gateway``; it runs in embedded mode (the demo tasks
in-process) on a free port of 127.0.0.1 and is killed when the tests end."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_DIR = os.path.dirname(HERE)  # clients/python
REPO_ROOT = os.path.dirname(os.path.dirname(CLIENT_DIR))

_lock = threading.Lock()
_url: str | None = None
_failed: str | None = None  # why the gateway could not be started: not tried again


def free_port() -> int:
    """A port of 127.0.0.1 free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_url() -> str:
    """The URL of the gateway the tests use, started at the first call."""
    global _url, _failed
    with _lock:
        if _failed is not None:
            raise RuntimeError(_failed)
        if _url is None:
            try:
                _url = os.environ.get("ATASKS_GATEWAY_URL", "").rstrip("/") or _start()
            except Exception as err:
                _failed = f"no gateway for the tests: {err}"
                raise RuntimeError(_failed) from err
        return _url


def _die_with_parent() -> None:
    # Linux: the gateway gets SIGTERM if the test process dies without atexit.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _start() -> str:
    binary = os.environ.get("ATASKS_GATEWAY_BIN", "")
    tmp = None
    if not binary:
        if shutil.which("go") is None:
            raise RuntimeError("the tests need a gateway: set ATASKS_GATEWAY_URL, or ATASKS_GATEWAY_BIN, or put go on PATH")
        tmp = tempfile.mkdtemp(prefix="atasks-py-")
        binary = os.path.join(tmp, "gateway")
        build = subprocess.run(
            ["go", "build", "-o", binary, "./cmd/gateway"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
        )
        if build.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(
                f"go build ./cmd/gateway failed (set ATASKS_GATEWAY_URL or ATASKS_GATEWAY_BIN to use another gateway):\n{build.stderr}"
            )
    last = None
    for _ in range(3):  # another process may take the port between free_port and listen
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [binary, "--listen", f"127.0.0.1:{port}", "--amqp-url=", "--log-level", "warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        atexit.register(_stop, proc, tmp, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return url
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        log.seek(0)
        last = f"gateway on {url} did not come up:\n{log.read().decode(errors='replace')}"
        _stop(proc, None, log)
    raise RuntimeError(last)


def _stop(proc: subprocess.Popen[bytes], tmp: str | None, log: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    log.close()
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def python() -> str:
    """The interpreter running the tests (the Debian one, which sees aiohttp)."""
    return sys.executable


def env_with_client() -> dict[str, str]:
    """The environment for a subprocess that imports atasks_client from here."""
    env = dict(os.environ)
    env["PYTHONPATH"] = CLIENT_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
