"""What an error answer says: a short, key-free quote of its body, for errors to show.

RunPod's REST answers are ``application/problem+json`` (``detail``, ``title``); GraphQL's
carry ``errors[0].message``; serverless ones ``error`` or ``message``. A page a browser
would show (a firewall's, usually) is named as such, not quoted.
"""

from __future__ import annotations

import json
from typing import Final

from ._hosts import redact_text

__all__ = ["HTML_PAGE", "said"]

# What `said` makes of a page a browser would show: no quote, just what it is.
HTML_PAGE: Final = "an HTML page"
_DETAIL_LIMIT: Final = 200


def said(content_type: str | None, body: bytes) -> str | None:
    """What an error answer's body says, short and without keys: for the error to quote.

    RunPod's REST answers are ``application/problem+json`` (``detail``, ``title``);
    GraphQL's carry ``errors[0].message``; serverless ones ``error`` or ``message``. An
    HTML page is named as such (a firewall's, usually). Anything else: its first line.
    """
    if not body:
        return None
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "text/html" or body.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
        return HTML_PAGE
    text = body.decode("utf-8", "replace")
    if kind.endswith("json"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict):
            errors = document.get("errors")
            first = errors[0] if isinstance(errors, list) and errors else None
            for found in (
                document.get("detail"),
                document.get("title"),
                first.get("message") if isinstance(first, dict) else None,
                document.get("error"),
                document.get("message"),
            ):
                if isinstance(found, str) and found.strip():
                    text = found
                    break
    line = text.strip().splitlines()[0] if text.strip() else ""
    # Keys out first: a cut through a key would leave a piece no pattern recognises.
    return redact_text(line)[:_DETAIL_LIMIT] or None
