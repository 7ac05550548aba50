"""A log line's identity across collection paths: `line_key`.

Vector's events carry a `dedupe` digest over the timestamp *text* and the stream; the live
tap (reana_log_sse/kubernetes/tap.py) reads the same line from the apiserver's merged log,
which formats the timestamp differently (the kubelet writes RFC3339Nano with trailing zeros
trimmed, pkg/kubelet/kuberuntime/logs/logs.go; CRI files and Vector keep all nine digits)
and does not say which stream the line came from. `line_key` names a line by what both
paths agree on:

    blake2b-128(workflow_id, pod, container, timestamp in integer nanoseconds, message,
                ordinal of identical (pod, container, ns, message))

The ordinal is counted within one Vector batch (`LineKeys()`), and by the tap over its
whole follow of one container (`LineKeys.follow()`): the follow is one sequential stream,
so it knows each line's true occurrence whatever chunks the HTTP reads return.

`dedupe` is unchanged for Vector's events; `line_key` is an extra column with its own
partial unique index (sql/0003_line_key.sql).
"""

from __future__ import annotations

import calendar
import hashlib
import re
import time
import uuid

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))\Z"
)


_blake2b = hashlib.blake2b
_BLAKE2B_16 = _blake2b(digest_size=16)  # copied per line, never updated itself
_new = object.__new__
_set_int = uuid.UUID.int.__set__  # UUID's slots (member descriptors)
_set_safe = uuid.UUID.is_safe.__set__
_UNKNOWN = uuid.SafeUUID.unknown  # read once: an enum member is a property get each time
_from_bytes = int.from_bytes


def uuid_of(digest: bytes) -> uuid.UUID:
    """uuid.UUID(bytes=digest), equal in every field, without UUID.__init__'s argument
    checks (a third of its cost): the two slots it sets, set through their descriptors."""
    u = _new(uuid.UUID)
    _set_int(u, _from_bytes(digest))
    _set_safe(u, _UNKNOWN)
    return u
_SECONDS: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch seconds, for the fast path


def parse_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC3339 timestamp with up to nine fraction digits
    (Python's datetime keeps only microseconds); None when it is not one, or has no zone."""
    # fast path, the shape every CRI runtime and the kubelet write: ...SS[.fffffffff]Z
    if 20 <= len(text) <= 30 and text[-1] == "Z" and (len(text) == 20 or text[19] == "."):
        seconds = _SECONDS.get(text[:19])
        if seconds is None:
            seconds = _slow(text[:19] + "Z")
            if seconds is None:
                return None
            seconds //= 1_000_000_000
            if len(_SECONDS) > 4096:
                _SECONDS.clear()
            _SECONDS[text[:19]] = seconds
        fraction = text[20:-1]
        if not fraction:
            return None if len(text) == 21 else seconds * 1_000_000_000
        if fraction.isdigit() and fraction.isascii():
            return seconds * 1_000_000_000 + int(fraction.ljust(9, "0"))
        return None
    return _slow(text.strip())


def _slow(text: str) -> int | None:
    m = _RFC3339.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = m.group(7) or ""
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


def format_ns(ns: int) -> str:
    """RFC3339Nano as Go's time.Format(time.RFC3339Nano) writes it: trailing zeros trimmed."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


class LineKeys:
    """line_key for each line of one batch; identical lines get successive ordinals."""

    __slots__ = ("_seen", "_latest", "_stream")

    def __init__(self) -> None:
        self._seen: dict[bytes, int] = {}
        self._latest: int | None = None
        self._stream = False

    @classmethod
    def follow(cls) -> LineKeys:
        """For one container's lines in their order (the tap's follow, across its chunks
        and resumes): ordinals continue from call to call. A container's timestamps do not
        decrease, so identical lines share the latest timestamp and only the counts at it
        are kept (a line at another timestamp starts afresh)."""
        keys = cls()
        keys._stream = True
        return keys

    def copy(self) -> LineKeys:
        """The same counts, to key lines that may not be stored (the caller keeps the
        copy only once they are)."""
        keys = LineKeys()
        keys._seen = dict(self._seen)
        keys._latest, keys._stream = self._latest, self._stream
        return keys

    def __len__(self) -> int:
        """How many distinct lines the counts remember."""
        return len(self._seen)

    def key(self, workflow_id: str, pod: str, container: str, ns: int,
            message: str) -> uuid.UUID:
        base = f"{workflow_id}\x1f{pod}\x1f{container}\x1f{ns}\x1f{message}".encode(
            "utf-8", "replace")
        seen = self._seen
        if self._stream and ns != self._latest:
            seen.clear()
            self._latest = ns
        ordinal = seen.get(base, 0)
        seen[base] = ordinal + 1
        h = _BLAKE2B_16.copy()  # = _blake2b(base + suffix, digest_size=16)
        h.update(base)
        h.update(b"\x1f0" if ordinal == 0 else b"\x1f%d" % ordinal)
        return uuid_of(h.digest())
