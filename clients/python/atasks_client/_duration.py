"""Durations: seconds (int, float), datetime.timedelta, or Go duration strings."""

from __future__ import annotations

import datetime
import math
import re
from typing import Union

__all__ = ["Duration", "duration"]

#: A duration: seconds (``1.5``), a :class:`datetime.timedelta`, or a Go
#: duration string as the gateway speaks it (``"250ms"``, ``"5s"``, ``"1m30s"``).
Duration = Union[int, float, datetime.timedelta, str]

_GO = re.compile(r"^(?:0|(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$")
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(value: Duration | None, name: str) -> tuple[str, float] | None:
    """Returns ``(go_text, seconds)`` for value, or ``None`` for ``None`` or
    ``""``; raises :class:`ValueError` (or :class:`TypeError`) naming ``name``
    for a negative, non-finite or malformed one."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if not _GO.match(value):
            raise ValueError(f"{name}: want seconds or a Go duration such as 250ms or 5s, got {value!r}")
        seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(value))
        return value, seconds
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{name}: want seconds, a timedelta or a Go duration string, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name}: want a duration >= 0, got {value!r}")
    us = round(seconds * 1_000_000)
    if us % 1_000_000 == 0:
        text = f"{us // 1_000_000}s"
    elif us % 1000 == 0:
        text = f"{us // 1000}ms"
    else:
        text = f"{us}us"
    return text, seconds
