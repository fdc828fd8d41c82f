"""What the subcommands share: argument types and how output is coloured."""

from __future__ import annotations

import argparse
import os
from typing import TextIO

import httpx

from ..recovery._prompt import is_tty

__all__ = ["api_url", "not_blank", "port", "use_color"]

_LAST_PORT = 65535


def api_url(text: str) -> str:
    """An ``--api-url`` value: an http(s) URL with a host, else a usage error (exit 2).

    Caught here, not at the first request: ``127.0.0.1:8000`` without a scheme would
    otherwise surface as a network failure, and its advice would send people looking
    at the network instead of at the command line.
    """
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        msg = f"{text!r} is not an http:// or https:// URL (e.g. http://{text})"
        raise argparse.ArgumentTypeError(msg)
    return text


def not_blank(text: str) -> str:
    """A value that must say something (``--profile``, ``--to``): blank is a usage error (exit 2).

    An empty ``--to`` would otherwise mean "no --to" and save into the config file, and
    an empty ``--profile`` would write a ``[""]`` table no tool reads.
    """
    if not text.strip():
        msg = "cannot be empty"
        raise argparse.ArgumentTypeError(msg)
    return text


def port(text: str) -> int:
    """A ``--port`` value: 0 (any free port) to 65535, else a usage error (exit 2)."""
    try:
        number = int(text)
    except ValueError:
        number = -1
    if not 0 <= number <= _LAST_PORT:
        msg = f"{text!r} is not a port number (0 to {_LAST_PORT}; 0 picks a free one)"
        raise argparse.ArgumentTypeError(msg)
    return number


def use_color(stream: TextIO) -> bool:
    """Whether to colour *stream*: a terminal, and ``NO_COLOR`` unset (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and is_tty(stream)
