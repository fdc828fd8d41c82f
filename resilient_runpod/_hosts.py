"""Where a key may be sent, and how to print a URL without the secrets in it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Protocol, TypeAlias

import httpx

from ._errors import ConfigError
from ._keys import fingerprint, known_keys

__all__ = [
    "RUNPOD_HOSTS",
    "AnyURL",
    "HostPolicy",
    "ParsedURL",
    "as_httpx_url",
    "query_text",
    "redact_text",
    "redact_url",
    "without_api_key_param",
]

# RunPod's own API hosts. The key is sent to these over HTTPS only.
RUNPOD_HOSTS = frozenset({"api.runpod.ai", "api.runpod.io", "rest.runpod.io"})
# The runpod SDK reads these to point itself elsewhere (a proxy, an emulator): a host
# named there is where the user already sends the key.
_BASE_URL_VARIABLES = ("RUNPOD_ENDPOINT_BASE_URL", "RUNPOD_API_BASE_URL")
_DEFAULT_PORTS = {"http": 80, "https": 443}

_Origin = tuple[str, str, int]


class ParsedURL(Protocol):
    """A URL another client has already parsed: aiohttp's ``yarl.URL``."""

    @property
    def scheme(self) -> str: ...
    @property
    def raw_host(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...


# What the engine and the host policy take: httpx's URL, text, or aiohttp's URL.
AnyURL: TypeAlias = httpx.URL | str | ParsedURL


def as_httpx_url(url: AnyURL) -> httpx.URL:
    """*url* as an ``httpx.URL`` (parsed again only when it is not one already)."""
    return url if isinstance(url, httpx.URL) else httpx.URL(str(url))


def _origin_key_public(url: httpx.URL) -> object:
    return (url.raw_scheme, url.raw_host, url.port)


def _origin_key_parsed(url: httpx.URL) -> object:
    ref = url._uri_reference  # noqa: SLF001 -- see _origin_key
    return (ref.scheme, ref.host, ref.port)


def _query_public(url: httpx.URL) -> str:
    return url.query.decode("ascii")


def _query_parsed(url: httpx.URL) -> str:
    return url._uri_reference.query or ""  # noqa: SLF001 -- see _origin_key


def _has_parsed_parts() -> bool:
    try:
        ref = httpx.URL("https://h:1/p?q=1")._uri_reference  # noqa: SLF001
    except AttributeError:  # pragma: no cover -- a future httpx; the public path then
        return False
    return (ref.scheme, ref.host, ref.port, ref.query) == ("https", "h", 1, "q=1")


# What names a URL's origin in the host cache, read on every request. httpx's public
# properties re-encode the parsed parts into bytes on each read (a third of the host
# check); the parsed parts themselves are read when this httpx keeps them where 0.23 to
# 0.28 do, and the public properties otherwise. Both give the same verdicts (tested).
_PARSED_PARTS = _has_parsed_parts()
_origin_key = _origin_key_parsed if _PARSED_PARTS else _origin_key_public
# The query as text, for the adapters' ``?api_key=`` test on every request.
query_text = _query_parsed if _PARSED_PARTS else _query_public


def _origin(scheme: str, host: str, port: int | None) -> _Origin:
    return (scheme, host.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme, 0))


def _parse_allowed(entry: str) -> set[_Origin]:
    """Turn ``"host"``, ``"host:port"`` or ``"scheme://host[:port][/path]"`` into origins.

    A bare host or host:port is allowed over both http and https: the user named it
    explicitly (an emulator on loopback speaks plain http).
    """
    url = httpx.URL(entry if "://" in entry else f"http://{entry}")
    if not url.host:
        raise ValueError(f"hosts: {entry!r} names no host; use 'host', 'host:port' or a URL")
    if "://" in entry:
        return {_origin(url.scheme, url.host, url.port)}
    if url.port is None:
        return {_origin("http", url.host, None), _origin("https", url.host, None)}
    return {_origin("http", url.host, url.port), _origin("https", url.host, url.port)}


_MAX_PORT = 65535


def _user_entry(entry: object) -> set[_Origin]:
    """`_parse_allowed` for an entry of ``Credentials(hosts=[...])``, refusing what is wrong.

    A non-string, a wildcard, user info, a path, another scheme or a port out of range
    would otherwise be kept, silently matching nothing (or too much).
    """
    allowed = "'host', 'host:port' or 'scheme://host[:port]'"
    if not isinstance(entry, str):
        raise ConfigError(
            f"Credentials(hosts=[...]): each host must be a str such as {allowed}, "
            f"not {type(entry).__name__}"
        )
    problem = _entry_problem(entry)
    if problem:
        raise ConfigError(f"Credentials(hosts=[{entry!r}]): {problem}; use {allowed}")
    return _parse_allowed(entry)


def _entry_problem(entry: str) -> str:  # noqa: PLR0911 -- one return per problem
    """What is wrong with a hosts entry, or ``""``."""
    if "*" in entry:
        return "wildcards are not matched: list each host"
    if "@" in entry:
        return "user info has no place in a host"
    try:
        url = httpx.URL(entry if "://" in entry else f"http://{entry}")
    except httpx.InvalidURL as exc:
        return f"not a host ({exc})"
    if url.path not in ("", "/") or url.query or url.fragment:
        return "a path, query or fragment is not part of a host"
    if url.scheme not in ("http", "https"):
        return "only http and https are spoken"
    if url.port is not None and not 1 <= url.port <= _MAX_PORT:
        return f"port {url.port} is outside 1-{_MAX_PORT}"
    return "" if url.host else "it names no host"


class HostPolicy:
    """Decides whether a URL is RunPod's (gets the key, may trigger recovery) or not.

    RunPod's hosts over HTTPS are always allowed; so are the hosts in the SDK's base-URL
    variables and any the user lists. Everything else, loopback included, never sees
    the key.
    """

    __slots__ = ("_allowed", "_cache")

    def __init__(self, extra: Iterable[str] = (), *, environ: bool = True) -> None:
        if isinstance(extra, (str, bytes)):
            raise ConfigError(
                f"Credentials(hosts={extra!r}): hosts must be a list of hosts, such as "
                f"[{extra!r}], not a string"
            )
        allowed = {_origin("https", host, None) for host in RUNPOD_HOSTS}
        for entry in extra:
            allowed |= _user_entry(entry)
        for variable in _BASE_URL_VARIABLES if environ else ():
            value = os.environ.get(variable, "")
            try:
                allowed |= _parse_allowed(value) if value else set()
            except (ValueError, httpx.InvalidURL):
                # Not ours to refuse: the SDK reads it too. It names no host: none allowed.
                continue
        self._allowed = frozenset(allowed)
        self._cache: dict[object, bool] = {}

    def allows(self, url: AnyURL) -> bool:
        """Whether a request to *url* may carry the key.

        Verdicts are cached by origin, so the URL is parsed once per origin, not once
        per request. Each kind of URL names its origin its own way in the cache; a
        key means one origin whichever kind it came from.
        """
        if isinstance(url, str):
            # "scheme://authority/...": the first three pieces name the origin.
            cache_key: object = tuple(url.split("/", 3)[:3])
        elif isinstance(url, httpx.URL):
            cache_key = _origin_key(url)
        else:  # yarl keeps the port explicit, so it never meets httpx's (..., None)
            cache_key = (url.scheme, url.raw_host, url.port)
        try:
            return self._cache[cache_key]
        except KeyError:
            parsed = as_httpx_url(url)
            verdict = _origin(parsed.scheme, parsed.host, parsed.port) in self._allowed
            if len(self._cache) < 1024:  # noqa: PLR2004 -- a bound, not a tuning knob
                self._cache[cache_key] = verdict
            return verdict

    def __repr__(self) -> str:
        hosts = sorted(f"{s}://{h}:{p}" for s, h, p in self._allowed)
        return f"HostPolicy({hosts})"


def without_api_key_param(url: httpx.URL) -> httpx.URL | None:
    """*url* without its ``?api_key=`` parameter; None if it carries none.

    GraphQL scripts often pass the key that way. The adapters send the key in the
    ``Authorization`` header, which RunPod's GraphQL reads first, and take it out of the
    URL: a URL is what proxies, access logs and tracing (OpenTelemetry's ``url.full``)
    record, and the key would go on being sent after a rotation replaced it.
    """
    if "api_key" not in url.params:
        return None
    return url.copy_remove_param("api_key")


# Query parameters that carry secrets in RunPod scripts (GraphQL's ?api_key=) and elsewhere.
_SECRET_PARAMS = frozenset({"api_key", "apikey", "key", "token", "access_token"})


def redact_url(url: httpx.URL | str) -> str:
    """*url* as text, without user info, secret query values, or a key anywhere else.

    A key can sit in the path too (``/v2/<key>/run`` from a mix-up of endpoint id and
    key, a proxy that routes by key): the whole text then goes through `redact_text`.
    """
    url = httpx.URL(url)
    if url.userinfo:
        url = url.copy_with(username=None, password=None)
    if url.query:
        params = [
            (k, "[REDACTED]" if k.lower() in _SECRET_PARAMS else v)
            for k, v in url.params.multi_items()
        ]
        url = url.copy_with(params=params)
    return redact_text(str(url))


# No word boundary in front: a key glued to other text (a log prefix, a path) is a key still.
_RPA_KEY = re.compile(r"rp[as]_[A-Za-z0-9]{8,}")
_AUTH_VALUE = re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+")
_QUERY_SECRET = re.compile(r"(?i)\b(api_key|apikey|access_token|token)=([^&\s\"'#]+)")


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """Replace every key-looking thing in *text*: RunPod keys, auth values, secret params.

    Every key this process has held (`_keys.known_keys`) is removed as well, as is each
    exact secret in *known* (legacy keys have no prefix to match).
    """
    for secret in (*known, *known_keys()):
        if secret and secret in text:
            text = text.replace(secret, fingerprint(secret))
    text = _RPA_KEY.sub(lambda m: fingerprint(m.group(0)), text)
    text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} [REDACTED]", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group(1)}=[REDACTED]", text)
