"""An ingest body: read it (capped, with a deadline), decompress it, and parse its events.

A JSON array is told from NDJSON by the body itself: a first non-space byte `[` means an
array, anything else is one JSON value or newline-delimited JSON, read line by line, so
one bad line costs only itself (it is rejected with its reason). The Content-Type is not
needed to tell them apart. Only a body that cannot be decompressed is refused whole.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from typing import Any, NamedTuple

import orjson
import zstandard
from starlette.exceptions import HTTPException
from starlette.requests import Request

from reana_log_sse.bodies import TooLarge, read_capped

REJECTED_TEXT_CHARS = 100_000  # what a rejected event keeps of its text
_LEADING_SPACE = re.compile(rb"[ \t\r\n]*")
_BOM = b"\xef\xbb\xbf"
_READ_CHUNK = 1 << 20


SALVAGE_FACTOR = 16  # an over-cap compressed body is read up to 16 times the cap, no more
_EDGE_TAIL = 64 * 1024


class BodyTooLarge(Exception):
    """The decompressed body is over the cap; `edges` what was kept of it, if it was
    read on (see read_body's `keep_head`)."""

    def __init__(self, edges: Edges | None = None, *, drained: bool = True) -> None:
        super().__init__("body too large")
        self.edges = edges
        self.drained = drained  # read to its end: the sender can read the 413


_QUOTE_RUN = re.compile(rb'\\*"')  # a quote and the backslashes before it


class Edges:
    """An over-cap body read in bounded memory: its first bytes, its last 64 KiB, its
    size, and where its first unescaped `"` after the head lies (so that a JSON string
    running from the head into the tail is known to hold nothing else)."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.tail = bytearray()
        self.size = len(head)
        self.first_quote: int | None = None  # offset in the body
        self._backslashes = len(head) - len(head.rstrip(b"\\"))

    def feed(self, chunk: bytes) -> None:
        if self.first_quote is None:
            for m in _QUOTE_RUN.finditer(chunk):
                run = m.end() - 1 - m.start() + (self._backslashes if m.start() == 0 else 0)
                if run % 2 == 0:
                    self.first_quote = self.size + m.end() - 1
                    break
            trailing = len(chunk) - len(chunk.rstrip(b"\\"))
            self._backslashes = trailing + (self._backslashes if trailing == len(chunk) else 0)
        self.size += len(chunk)
        self.tail += chunk
        del self.tail[:-_EDGE_TAIL]


class Parsed(NamedTuple):
    events: list[Any]  # decoded JSON values, one per event (not yet validated)
    rejected: list[tuple[str, str]]  # (reason, text) for what could not even be decoded


async def read_body(request: Request, limit: int, timeout: float,
                    keep_head: int = 0) -> bytes:
    """The request body, decompressed, at most `limit` bytes (else BodyTooLarge). The
    whole body must arrive within `timeout` seconds (else 408, which a sender retries):
    a client trickling bytes cannot hold a request open. A body over `limit` as sent is
    drained up to SALVAGE_FACTOR times `limit` (bodies.read_capped), so that the sender
    reads the 413 instead of a reset connection.

    With keep_head, a body past `limit` (as sent, or inflating past it) is read on (up to
    SALVAGE_FACTOR times `limit`, in bounded memory) and BodyTooLarge carries its first
    `keep_head` bytes and its last 64 KiB, so that one huge message can still be cut
    (`salvage`)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    identity = encoding in ("", "identity")
    kept: list[Edges] = []

    def keep(chunk: bytes) -> None:  # an identity body past the cap: its edges
        if kept:
            kept[0].feed(chunk)
        else:
            kept.append(Edges(chunk[:keep_head]))
            kept[0].feed(chunk[keep_head:])

    try:
        raw = await read_capped(request, limit, timeout, drain=limit * SALVAGE_FACTOR,
                                over=keep if keep_head and identity else None)
    except TooLarge as exc:
        raise BodyTooLarge(kept[0] if kept and exc.drained else None,
                           drained=exc.drained) from None
    if identity:
        return raw
    if encoding in ("gzip", "x-gzip"):
        reader: Any = gzip.GzipFile(fileobj=io.BytesIO(raw))  # reads every member
    elif encoding == "zstd":
        # a body may hold several frames (a sender that compresses per chunk)
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw),
                                                            read_across_frames=True)
    else:
        raise HTTPException(415, f"unsupported Content-Encoding {encoding!r}: use gzip, zstd "
                            "or none")
    out, size = [], 0
    edges: Edges | None = None
    try:
        while True:
            chunk = reader.read(_READ_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if edges is not None:  # past the cap: keep only the edges
                edges.feed(chunk)
                if size > limit * SALVAGE_FACTOR:
                    raise BodyTooLarge
            elif size <= limit:
                out.append(chunk)
            elif not keep_head:
                raise BodyTooLarge
            else:
                data = b"".join(out) + chunk
                out = []
                edges = Edges(data[:keep_head])
                edges.feed(data[keep_head:])
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise HTTPException(400, f"body is not valid {encoding}: {exc}") from exc
    if edges is not None:
        raise BodyTooLarge(edges)
    return b"".join(out)


def is_array(body: bytes) -> bool:
    """Is this body a JSON array (its first non-space byte `[`)? Else it is NDJSON."""
    start = _LEADING_SPACE.match(body).end()  # type: ignore[union-attr]
    return body[start:start + 1] == b"["


def parse_events(body: bytes) -> Parsed:
    """Events of a JSON array, of one JSON object, or of NDJSON lines (told by content).
    A body that starts with `[` but is not one JSON array (NDJSON whose first line is an
    array, a cut or broken array) is read line by line too: each line that is not an
    event is then kept as rejected, and nothing is refused whole."""
    if body.startswith(_BOM):
        body = body[3:]
    if is_array(body):
        events = _parse_array(body)
        if events is not None:
            return Parsed(events, [])
        elements = split_array(body)
        if elements is not None:  # one bad element (too deep, say) costs only itself
            return _parse_elements(elements)
        return _parse_lines(body)
    try:
        value = orjson.loads(body)  # one value, perhaps pretty-printed over several lines
    except orjson.JSONDecodeError:
        return _parse_lines(body)
    return Parsed([value], [])


def _parse_array(body: bytes) -> list[Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Slow path: invalid UTF-8, lone surrogates, NaN, deep nesting or huge integers.
        data, error = _slow_loads(body)
        if error is not None:
            return None
    return data if isinstance(data, list) else None


# a JSON string (escapes and all) or one of the bytes that shape an array
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)


def split_array(body: bytes) -> list[bytes] | None:
    """The text of each element of a JSON array, by its brackets, braces and commas
    outside strings, without decoding anything (an element nested too deeply for a parser
    is found like any other). None if the body is not one array so shaped."""
    start = body.index(b"[")
    elements: list[bytes] = []
    depth, begin = 0, start + 1
    for m in _TOKEN.finditer(body, start):
        token = m.group()
        if token[0] == 0x22:  # a string
            continue
        if token in (b"[", b"{"):
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
            if depth == 0:
                if body[m.end():].strip():
                    return None  # something after the array
                last = body[begin:m.start()]
                if last.strip():
                    elements.append(last)
                elif elements:
                    return None  # a trailing comma
                return elements
            if depth < 0:
                return None
        elif depth == 1:  # a comma between elements
            elements.append(body[begin:m.start()])
            begin = m.end()
    return None  # never closed


def _parse_elements(elements: list[bytes]) -> Parsed:
    events: list[Any] = []
    rejected: list[tuple[str, str]] = []
    for element in elements:
        try:
            events.append(orjson.loads(element))
            continue
        except orjson.JSONDecodeError:
            pass
        value, error = _slow_loads(element)
        if error is None:
            events.append(value)
        else:
            rejected.append((f"event is not JSON: {error}", rejected_text(element)))
    return Parsed(events, rejected)


def _parse_lines(body: bytes) -> Parsed:
    events: list[Any] = []
    rejected: list[tuple[str, str]] = []
    loads = orjson.loads
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            events.append(loads(line))
            continue
        except orjson.JSONDecodeError:
            pass
        value, error = _slow_loads(line)
        if error is None:
            events.append(value)
        else:
            rejected.append((f"line is not JSON: {error}", rejected_text(line)))
    return Parsed(events, rejected)


class HugeInt:
    """An integer too long to convert (Python refuses over 4300 digits): kept as a
    placeholder, so an ignored extra field does not cost its event, and a known field
    holding one fails validation like any other wrong type."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer of {self.digits} digits>"


def _parse_int(text: str) -> int | HugeInt:
    return int(text) if len(text) <= 4000 else HugeInt(len(text))


def _slow_loads(data: bytes) -> tuple[Any, str | None]:
    """The standard library's parser, which takes what orjson refuses: invalid UTF-8 is
    replaced and lone surrogates scrubbed (as the service always did, so a stored line's
    dedupe digest stays the same). Returns (value, None) or (None, reason)."""
    text = data.decode("utf-8", errors="replace")
    try:
        value = json.loads(text.encode("utf-8", "replace"), parse_int=_parse_int)
    except RecursionError:
        return None, "nested too deeply"
    except ValueError as exc:
        return None, str(exc)
    if isinstance(value, list):
        return [_scrub_event(v) for v in value], None
    return _scrub_event(value), None


def _scrub_event(value: Any) -> Any:
    try:
        return _scrub(value)
    except RecursionError:  # deep nesting: the fields that matter are at the top
        if isinstance(value, dict):
            return {k: _scrub(v) if isinstance(v, str) else v for k, v in value.items()}
        return value


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


_MESSAGE_START = re.compile(rb'"message"\s*:\s*"')
_QUOTE = re.compile(rb'"')


def salvage(edges: Edges) -> tuple[list[Any], int] | None:
    """The events of an over-cap body whose excess is one message's text, that message
    cut: what lies before its text, as much of the text as the head holds, and what
    follows its closing quote, all of which must lie in the tail; with the index of the
    event whose message was cut. None otherwise (then cutting would lose events, and the
    body is refused whole)."""
    head, tail = edges.head, bytes(edges.tail)
    found = _MESSAGE_START.search(head)
    if found is None or edges.first_quote is None:
        return None
    text = head[found.end():]
    if _unescaped_quote(text, 0) is not None:  # that message ends in the head: not it
        return None
    tail_start = edges.size - len(tail)
    if edges.first_quote < tail_start:  # something else between head and tail
        return None
    prefix = _string_prefix(text)
    if prefix is None:
        return None
    rest = tail[edges.first_quote - tail_start + 1:]
    value, error = _slow_loads(head[:found.end() - 1] + orjson.dumps(prefix) + rest)
    if error is not None:
        return None
    events = value if isinstance(value, list) else [value]
    if not events or not all(isinstance(e, dict) for e in events):
        return None
    cut = next((i for i, e in enumerate(events) if e.get("message") == prefix), None)
    return (events, cut) if cut is not None else None


def _unescaped_quote(data: bytes, start: int) -> int | None:
    for m in _QUOTE.finditer(data, start):
        i = j = m.start()
        while j > 0 and data[j - 1] == 0x5C:  # backslashes before it
            j -= 1
        if (i - j) % 2 == 0:
            return i
    return None


def _string_prefix(escaped: bytes) -> str | None:
    """The decoded text of a JSON string's escaped content cut anywhere (mid-escape or
    mid-character): the longest prefix that decodes."""
    text = escaped.decode("utf-8", "ignore")
    for cut in range(len(text), max(len(text) - 12, -1), -1):
        try:
            value = json.loads('"' + text[:cut] + '"', strict=False)
        except ValueError:
            continue
        if value and "\ud800" <= value[-1] <= "\udbff":  # a pair's escape cut in two
            value = value[:-1]
        return _scrub(value)  # type: ignore[no-any-return]
    return None


def rejected_text(raw: bytes | str) -> str:
    """What a rejected event keeps of its text: valid UTF-8, no NUL, at most 100,000
    characters (PostgreSQL text cannot hold NUL)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text[:REJECTED_TEXT_CHARS].replace("\x00", "\ufffd")


def dump_rejected(raw: Any) -> str:
    """A decoded event as JSON text for rejected_events, whatever it holds."""
    try:
        text = orjson.dumps(raw).decode()
    except TypeError:  # nesting orjson refuses, lone surrogates, HugeInt placeholders
        try:
            text = repr(raw)
        except RecursionError:
            text = f"<{type(raw).__name__} nested too deeply to print>"
    return rejected_text(text)
