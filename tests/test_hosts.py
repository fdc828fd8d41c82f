from __future__ import annotations

import httpx
import pytest
import yarl

from resilient_runpod import ConfigError, _hosts, fingerprint
from resilient_runpod._hosts import HostPolicy, query_text, redact_text, redact_url

from .helpers import make_key


class TestHostPolicy:
    @pytest.mark.parametrize(
        "url",
        [
            "https://api.runpod.ai/v2/abc/run",
            "https://api.runpod.io/graphql",
            "https://rest.runpod.io/v1/pods",
            "https://API.RUNPOD.AI/v2/x/health",
        ],
    )
    def test_runpod_hosts_over_https_get_the_key(self, url):
        """RunPod's own API hosts are allowed over HTTPS."""
        assert HostPolicy().allows(httpx.URL(url))

    @pytest.mark.parametrize(
        "url",
        [
            "http://api.runpod.ai/v2/abc/run",  # plain http would expose the key
            "https://api.runpod.ai.evil.example/v2",
            "https://example.com/",
            "http://127.0.0.1:8000/v2/x/run",  # loopback only when allowed
            "https://api.runpod.ai:8443/v2",
        ],
    )
    def test_other_origins_never_get_the_key(self, url):
        """Look-alike hosts, other ports, plain http and loopback are not RunPod."""
        assert not HostPolicy().allows(httpx.URL(url))

    def test_allowed_host_and_port(self):
        """A host:port the user lists is allowed over http and https, on that port only."""
        policy = HostPolicy(["127.0.0.1:8123"])

        assert [True, True, False] == [
            policy.allows(httpx.URL("http://127.0.0.1:8123/v2")),
            policy.allows(httpx.URL("https://127.0.0.1:8123/v2")),
            policy.allows(httpx.URL("http://127.0.0.1:8124/v2")),
        ]

    @pytest.mark.parametrize(
        ("entry", "fragment"),
        [
            ("*.runpod.io", "wildcards are not matched"),
            ("https://proxy.internal/runpod", "a path, query or fragment"),
            ("127.0.0.1:99999", "port 99999 is outside 1-65535"),
            ("127.0.0.1:0", "port 0 is outside"),
            ("user:secret@127.0.0.1", "user info"),
            ("ftp://127.0.0.1", "only http and https"),
            (None, "must be a str"),
            (8000, "must be a str"),
        ],
    )
    def test_a_host_entry_that_would_be_kept_wrong_is_refused(self, entry, fragment):
        """Each entry of hosts=[...] is a host, or a ConfigError says what is allowed."""
        with pytest.raises(ConfigError, match=fragment) as info:
            HostPolicy([entry])  # type: ignore[list-item]
        assert "'host', 'host:port' or 'scheme://host[:port]'" in str(info.value)

    def test_allowed_url_keeps_its_scheme(self):
        """An allowed entry given as a URL allows that scheme only."""
        policy = HostPolicy(["https://proxy.internal:9000"])

        assert [True, False] == [
            policy.allows(httpx.URL("https://proxy.internal:9000/x")),
            policy.allows(httpx.URL("http://proxy.internal:9000/x")),
        ]

    def test_sdk_base_url_variables_are_runpod_hosts(self, monkeypatch):
        """The hosts in RUNPOD_ENDPOINT_BASE_URL and RUNPOD_API_BASE_URL may get the key."""
        monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "http://127.0.0.1:7001/v2")
        monkeypatch.setenv("RUNPOD_API_BASE_URL", "http://127.0.0.1:7002")

        policy = HostPolicy()

        assert [True, True] == [
            policy.allows(httpx.URL("http://127.0.0.1:7001/v2/e/run")),
            policy.allows(httpx.URL("http://127.0.0.1:7002/graphql")),
        ]


# Origins that must keep apart in the verdict cache: case, ports, schemes, look-alikes,
# IDNA and IPv6 hosts, user info.
_ORIGINS = [
    "https://api.runpod.ai/v2/abc/run",
    "https://API.RUNPOD.AI:443/v2/x",
    "http://api.runpod.ai/v2/abc/run",
    "https://api.runpod.ai:8443/v2",
    "https://api.runpod.ai.evil.example/v2",
    "https://user:pw@api.runpod.io/graphql?api_key=x",
    "http://127.0.0.1:8123/v2",
    "http://127.0.0.1:8124/v2",
    "https://127.0.0.1:8123/v2",
    "http://[::1]:8123/v2",
    "https://xn--fiqs8s.example/v2",
    "https://rest.runpod.io",
]


class TestOriginCache:
    """The host check reads a URL's origin the cheapest way each kind of URL allows."""

    @pytest.mark.parametrize("reader", ["parsed", "public"])
    def test_every_kind_of_url_gets_the_verdict_of_its_text(self, monkeypatch, reader):
        """httpx URLs (either way of reading them), yarl URLs and text agree, in any order."""
        if reader == "public":
            monkeypatch.setattr(_hosts, "_origin_key", _hosts._origin_key_public)
        expected = [HostPolicy(["127.0.0.1:8123"]).allows(httpx.URL(u)) for u in _ORIGINS]
        policy = HostPolicy(["127.0.0.1:8123"])  # one cache, shared by all kinds

        seen = [
            [policy.allows(url) for url in _ORIGINS],
            [policy.allows(yarl.URL(url)) for url in _ORIGINS],
            [policy.allows(httpx.URL(url)) for url in reversed(_ORIGINS)][::-1],
        ]

        assert [expected] * 3 == seen
        assert [True, True, False, False, False, True, True, False, True, False, False, True] == (
            expected
        )

    def test_this_httpx_is_read_without_re_encoding(self):
        """The installed httpx keeps the parsed parts the fast reader expects."""
        assert _hosts._origin_key_parsed is _hosts._origin_key
        assert _hosts._query_parsed is query_text

    @pytest.mark.parametrize(
        "url",
        ["https://h/p", "https://h/p?", "https://h/p?api_key=a%20b&x=1", "https://h/?k=%E2%9C%93"],
    )
    def test_query_text_is_the_query(self, url):
        """The fast and the public reading of a query give the same text."""
        parsed = httpx.URL(url)

        assert _hosts._query_public(parsed) == _hosts._query_parsed(parsed)


class TestRedaction:
    def test_a_key_glued_to_other_text_is_replaced(self):
        """A key right after letters or digits (a prefix, a joined string) is found too."""
        key = make_key()

        text = redact_text(f"token{key} and 42{key}")

        assert key[4:] not in text
        assert f"token{fingerprint(key)} and 42{fingerprint(key)}" == text

    def test_url_loses_secret_params_and_userinfo(self):
        """api_key= values and user:password@ are removed; the rest of the URL stays."""
        key = make_key()

        text = redact_url(f"https://user:pw@api.runpod.io/graphql?api_key={key}&x=1")

        assert key not in text
        assert "pw" not in text
        assert "x=1" in text

    def test_text_loses_keys_and_auth_values(self):
        """Keys, Bearer values and api_key= values are replaced wherever they appear."""
        key = make_key()
        legacy = "legacykey0123456789abcdef"

        text = redact_text(
            f"key {key} Authorization: Bearer {legacy} url?api_key={legacy}&a=b and {legacy}",
            known=[legacy],
        )

        assert key not in text
        assert legacy not in text
        assert "a=b" in text


def test_redact_url_removes_a_key_in_the_path():
    """An rpa_ key anywhere in a URL, the path included, is replaced by its fingerprint."""
    key = make_key()
    shown = redact_url(f"https://api.runpod.ai/v2/{key}/run")
    assert f"https://api.runpod.ai/v2/rpa_…{key[-4:]}/run" == shown


def test_redact_url_removes_a_held_legacy_key_in_the_path():
    """A key with no prefix to match is removed once this process has held it."""
    from resilient_runpod._keys import note_key

    legacy = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
    note_key(legacy)
    assert "https://proxy.example/…c4d5/v2/ep/run" == redact_url(
        f"https://proxy.example/{legacy}/v2/ep/run"
    )


def test_a_base_url_variable_without_a_host_allows_nothing_and_breaks_nothing(monkeypatch):
    """The SDK's base-URL variables are the SDK's: one that names no host is skipped, not
    refused (the user passed no ``hosts=``), and the other one still counts."""
    monkeypatch.setenv("RUNPOD_API_BASE_URL", "/api")
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "http://127.0.0.1:7001/v2")

    policy = HostPolicy()

    assert [True, False] == [
        policy.allows(httpx.URL("http://127.0.0.1:7001/v2/e/run")),
        policy.allows(httpx.URL("http://127.0.0.1:7002/v2/e/run")),
    ]
