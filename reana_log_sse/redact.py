"""No secret in any log line: every record, from any logger, is redacted before it is shown.

Credentials reach log lines by many roads: uvicorn's access log prints the request path
with its query (`?access_token=...`, also in spellings that do not authenticate, such as
`Access_Token=` or `;access_token=`), httpx logs every request URL at INFO ("HTTP Request:
GET ...?access_token=..."), httpcore at DEBUG prints header tuples (`(b'authorization',
b'Bearer ...')`, `(b'cookie', b'session=...')`), and a traceback may carry any of them.
So redaction is by shape, not by logger:

- `name=value` wherever it appears (a query, `;`-parameters, a Cookie header), when the
  name, percent-decoded and case-folded, looks like a credential (CREDENTIAL);
- `'name': 'value'` / `"name": "value"` (a dict or a JSON body), same names;
- a header tuple or line whose name is a credential header (`Authorization`, `Cookie`,
  `X-Gitlab-Token`...): its whole value;
- `Bearer <x>` / `Basic <x>` / `Digest <x>` anywhere.

`install()` puts it in the record factory (every record of every logger, whatever handler
shows it) and `RedactingFormatter` also redacts the formatted text (tracebacks included).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

MASK = "***"

# a name "looks like a credential" when it contains one of these (after decoding)
CREDENTIAL = re.compile(
    r"token|passw|secret|session|authoriz|cookie|api[-_]?key|csrf|jwt|credential|reana_at"
    r"|signature|private",
    re.IGNORECASE)

# nothing can need redacting in a text without one of these, case-folded (a percent sign:
# an encoded name or value may hide one): most lines skip the passes below
_MAYBE = ("token", "passw", "secret", "session", "authoriz", "cookie", "apikey", "api_key",
          "api-key", "csrf", "jwt", "credential", "reana_at", "signature", "private",
          "bearer", "basic", "digest", "%")
_PAIR = re.compile(r"(?<![\w%.~+-])([\w%.~+-]+)(=)([^&;\s\"',#<>)\]}]*)")
_QUOTED = re.compile(r"([\"'])([\w%.~+-]+)\1(\s*:\s*)([\"'])(.*?)(?<!\\)\4")
_HEADER_TUPLE = re.compile(
    r"(b?)([\"'])(authorization|proxy-authorization|cookie|set-cookie|x-[\w-]*token)\2"
    r"(\s*,\s*)(b?)([\"'])(.*?)(?<!\\)\6", re.IGNORECASE)
_HEADER_LINE = re.compile(
    r"(?<![\w-])(authorization|proxy-authorization|cookie|set-cookie|x-[\w-]*token)"
    r"(\s*:\s*)([^\r\n\"')\]}]+)", re.IGNORECASE)
_ENCODED_RUN = re.compile(r"[^\s\"'<>]*%[0-9A-Fa-f]{2}[^\s\"'<>]*")
_SCHEME = re.compile(r"(?<![\w-])(bearer|basic|digest)(\s+)([^\s\"',)\]}]+)",
                     re.IGNORECASE)


def is_credential(name: str) -> bool:
    try:
        decoded = unquote_plus(name)
    except Exception:  # noqa: BLE001 - a name we cannot decode is checked as it is
        decoded = name
    return bool(CREDENTIAL.search(decoded))


def redact(text: str) -> str:
    """`text` with every credential-looking value replaced by ***, also where a client
    (httpx encoding a parameter's value, say `page=1;access_token=...`) percent-encoded it:
    such a run is decoded, and shown decoded and redacted if only its decoding shows a
    credential."""
    if not text:
        return text
    folded = text.lower()
    if not any(word in folded for word in _MAYBE):
        return text
    if "%" in text:
        text = _ENCODED_RUN.sub(_redact_encoded, text)
    return _redact(text)


def _redact_encoded(match: re.Match[str]) -> str:
    run = decoded = match[0]
    plain = _redact(run)
    if plain != run:  # `access%5Ftoken=...`: the name is decoded by is_credential
        return plain
    for _ in range(3):  # double-encoded too
        try:
            decoded = unquote_plus(decoded)
        except Exception:  # noqa: BLE001 - not decodable: left to the plain passes
            break
        cleaned = _redact(decoded)
        if cleaned != decoded:
            return cleaned
        if "%" not in decoded:
            break
    return run


def _redact(text: str) -> str:
    text = _HEADER_TUPLE.sub(
        lambda m: f"{m[1]}{m[2]}{m[3]}{m[2]}{m[4]}{m[5]}{m[6]}{MASK}{m[6]}", text)
    text = _HEADER_LINE.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
    text = _SCHEME.sub(lambda m: f"{m[1]}{m[2]}{MASK}"
                       if m[3] != MASK else m[0], text)
    text = _QUOTED.sub(lambda m: (f"{m[1]}{m[2]}{m[1]}{m[3]}{m[4]}{MASK}{m[4]}"
                                  if is_credential(m[2]) else m[0]), text)
    return _PAIR.sub(lambda m: (f"{m[1]}={MASK}" if m[3] and is_credential(m[1])
                                else m[0]), text)


def _redact_arg(value: Any) -> Any:
    if isinstance(value, (int, float, type(None))):
        return value
    text = value if isinstance(value, str) else (
        value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """The record with nothing to redact in its message. Its arguments are redacted one
    by one (their types kept where nothing was redacted in them, so %d and formatters that
    read `args` still work); if the message still holds a credential (one split across
    the template and an argument), the record is collapsed to its redacted message."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken record is logging's to report, as ever
        return record
    if redact(message) == message:
        return record
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_arg(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redact_arg(v) for k, v in record.args.items()}
    elif isinstance(record.msg, str):
        record.msg = redact(record.msg)
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - an argument's type changed under a %d
        message = ""
    if not message or redact(message) != message:
        record.msg, record.args = redact(_message_of(record)), ()
    return record


def _message_of(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001
        return f"{record.msg} {record.args}"


_installed = False


def install() -> None:
    """Redact every record any logger makes from now on, in this process."""
    global _installed
    if _installed:
        return
    factory = logging.getLogRecordFactory()

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(factory(*args, **kwargs))

    logging.setLogRecordFactory(make)
    _installed = True


class RedactingFormatter(logging.Formatter):
    """A Formatter whose whole output (message, traceback, stack) is redacted; making one
    also installs the record factory, so a dictConfig that names it (as uvicorn's worker
    processes apply) redacts every record too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        install()

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactFilter(logging.Filter):
    """The same, as a filter for a logger or handler not set up by us."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True
