"""Secrets never reach a log, a table or an exception message: everything passes through here."""

from __future__ import annotations

import logging
import re
import traceback
from urllib.parse import quote, quote_plus

MASK = "***"
# A secret is replaced wherever it occurs: a short one would mask ordinary text too ("t" in every
# word). Shorter secrets are refused when the config is read; real keys and tokens are far longer.
MIN_SECRET_LENGTH = 8
# Query parameters and headers that carry credentials, whatever their value (up to the next
# parameter, or the fragment: a stored REST request keeps our own parameters after '#').
_PARAMS = re.compile(r"(?i)\b(api_?key|token|access_token|authorization|password|secret)=([^&#\s\"']+)")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)[A-Za-z0-9._~+/=-]+")


class Redactor:
    def __init__(self, secrets: list[str]) -> None:
        # Each secret also in the encoded forms it takes inside URLs.
        forms = {form for s in secrets if s for form in (s, quote(s, safe=""), quote_plus(s))}
        self._text = sorted(forms, key=len, reverse=True)
        self._bytes = [f.encode() for f in self._text]

    def text(self, value: str) -> str:
        for secret in self._text:
            if secret in value:
                value = value.replace(secret, MASK)
        value = _PARAMS.sub(lambda m: f"{m.group(1)}={MASK}", value)
        return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", value)

    def data(self, value: bytes) -> bytes:
        """Frames: only the configured secrets are looked for (cheap enough for every frame)."""
        for secret in self._bytes:
            if secret in value:
                value = value.replace(secret, MASK.encode())
        return value

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {k: (MASK if k.lower() in ("authorization", "x-api-key", "cookie") else self.text(v))
                for k, v in headers.items()}


_installed: Redactor | None = None
_known: set[str] = set()


def redact_logs(secrets: list[str]) -> None:
    """Redact `secrets` (and credential-looking query parameters) in every log record from now on.

    Done where records are made, so it covers third-party loggers too (websockets logs request
    lines with their query string at DEBUG, httpx logs URLs at INFO) and tracebacks.
    """
    global _installed
    _known.update(s for s in secrets if s)
    first = _installed is None
    _installed = Redactor(sorted(_known))
    if not first:
        return
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        assert _installed is not None
        record.msg = _installed.text(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = _installed.text("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        return record

    logging.setLogRecordFactory(redacting_factory)
