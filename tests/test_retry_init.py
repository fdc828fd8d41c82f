"""`retry_init` and `Credentials.validate`, against the emulator."""

from __future__ import annotations

import pytest
import runpod
import runpod.error

from resilient_runpod import (
    AuthenticationError,
    Credentials,
    KeyStatus,
    PermissionDeniedError,
    retry_init,
)


@pytest.fixture
def sdk(sdk, monkeypatch: pytest.MonkeyPatch):
    """The shared ``sdk``, but with no module-level key: retry_init hands the key over itself."""
    monkeypatch.setattr(sdk, "api_key", None)
    return sdk


def endpoint_factory(emulator, seen: list[str | None]):
    """A factory building the emulator's runpod.Endpoint, noting each key it is given."""

    def factory(key: str | None) -> runpod.Endpoint:
        seen.append(key)
        return runpod.Endpoint(emulator.endpoint_id, api_key=key)

    return factory


def test_a_factory_given_a_revoked_key_is_called_again_with_a_recovered_one(
    sdk, runpod_emulator, vault
):
    """The SDK builds an Endpoint without checking the key; validation finds the 401.

    As for any request, the first 401 is probed (the factory called once more with the
    same key) before the source is read.
    """
    revoked = vault.key
    vault.rotate()
    credentials = Credentials(revoked, recovery=vault, hosts=[runpod_emulator.host])
    seen: list[str | None] = []
    factory = endpoint_factory(runpod_emulator, seen)
    endpoint = retry_init(factory, credentials, api_url=runpod_emulator.api_url)
    assert [revoked, revoked, vault.key] == seen
    assert "jobs" in endpoint.health()
    assert 1 == vault.calls


def test_a_factory_that_raises_the_sdk_rejection_is_retried(sdk, runpod_emulator, vault):
    """The seed's workaround: construction raising runpod.error.AuthenticationError is retried."""
    revoked = vault.key
    vault.rotate()
    credentials = Credentials(revoked, recovery=vault, hosts=[runpod_emulator.host])
    user = retry_init(lambda key: runpod.get_user(api_key=key), credentials, validate_key=False)
    assert "id" in user
    assert 1 == vault.calls


def test_no_key_at_all_is_recovered_too(sdk, runpod_emulator, vault):
    """A missing key (GraphQL answers 200 with myself: null) runs recovery like a 401."""
    credentials = Credentials(None, recovery=vault, hosts=[runpod_emulator.host])
    seen = retry_init(lambda key: key, credentials)
    assert vault.key == seen
    assert 1 == vault.calls


def test_an_sdk_that_refuses_to_start_without_a_key_runs_recovery(sdk, runpod_emulator, vault):
    """No key anywhere: the SDK's own "api_key not initialized" refusal runs recovery."""
    credentials = Credentials(None, recovery=vault, hosts=[runpod_emulator.host])
    seen: list[str | None] = []
    factory = endpoint_factory(runpod_emulator, seen)
    endpoint = retry_init(factory, credentials, api_url=runpod_emulator.api_url)
    assert [None, vault.key] == seen
    assert "jobs" in endpoint.health()
    assert 1 == vault.calls


def test_a_factory_error_with_a_key_given_is_not_taken_for_a_missing_key(
    sdk, runpod_emulator, vault
):
    """Only a factory handed no key has its RuntimeError read as "no key": no recovery here."""
    credentials = Credentials(vault.key, recovery=vault, hosts=[runpod_emulator.host])

    def factory(key: str | None) -> None:
        raise RuntimeError("a bug in the factory")

    with pytest.raises(RuntimeError, match="a bug in the factory"):
        retry_init(factory, credentials)
    assert 0 == vault.calls


@pytest.mark.parametrize("clause", [AuthenticationError, runpod.error.AuthenticationError])
def test_giving_up_is_bounded_and_caught_by_existing_clauses(sdk, runpod_emulator, vault, clause):
    """A recovered key rejected too: probed, the source read again, then a typed error.

    The source still holds that recovered key, which RunPod never accepted: the rule's
    "never accepted" row ends it at once.
    """
    revoked = vault.key
    runpod_emulator.revoke(revoked)
    also_revoked = runpod_emulator.add_key()
    runpod_emulator.revoke(also_revoked)
    vault.key = also_revoked
    credentials = Credentials(
        revoked, recovery=vault, hosts=[runpod_emulator.host], recovery_window=0
    )
    calls: list[str | None] = []
    with pytest.raises(clause):
        retry_init(calls.append, credentials)
    assert [revoked, revoked, also_revoked, also_revoked] == calls
    assert 2 == vault.calls  # the new key; then nothing newer


def test_other_factory_errors_pass_through_untouched(sdk, runpod_emulator, vault):
    """A factory bug is not a rejected key: raised as is, no recovery."""
    credentials = Credentials(vault.key, recovery=vault, hosts=[runpod_emulator.host])

    def factory(key: str | None) -> None:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        retry_init(factory, credentials)
    assert 0 == vault.calls


def test_a_permission_error_from_the_factory_is_not_recovered(sdk, runpod_emulator, vault):
    """A 403 reported by the factory means the key is valid: PermissionDeniedError."""
    credentials = Credentials(vault.key, recovery=vault, hosts=[runpod_emulator.host])

    def factory(key: str | None) -> None:
        raise PermissionDeniedError("no", fingerprint="x")

    with pytest.raises(PermissionDeniedError):
        retry_init(factory, credentials)
    assert 0 == vault.calls


def test_the_key_is_not_sent_to_a_host_outside_the_policy(runpod_emulator, vault):
    """Validation against a host the credentials may not send the key to is refused upfront."""
    credentials = Credentials(vault.key, recovery=vault)
    with pytest.raises(ValueError, match="not a RunPod host"):
        retry_init(lambda key: key, credentials, api_url=runpod_emulator.api_url)
    assert 0 == runpod_emulator.counters().total


def test_validate_tells_accepted_rejected_and_missing_keys_apart(runpod_emulator):
    """Credentials.validate: one GraphQL call says what RunPod thinks of the key."""
    key, hosts = runpod_emulator.api_key, [runpod_emulator.host]
    assert (
        KeyStatus.ACCEPTED == Credentials(key, hosts=hosts).validate(runpod_emulator.api_url).status
    )
    assert (
        KeyStatus.MISSING == Credentials(None, hosts=hosts).validate(runpod_emulator.api_url).status
    )
    runpod_emulator.revoke(key)
    assert (
        KeyStatus.REJECTED == Credentials(key, hosts=hosts).validate(runpod_emulator.api_url).status
    )


def test_validate_refuses_to_send_the_key_elsewhere(runpod_emulator):
    """Credentials.validate never sends the key to a host outside its policy."""
    credentials = Credentials(runpod_emulator.api_key)

    with pytest.raises(ValueError, match="not a RunPod host"):
        credentials.validate(runpod_emulator.api_url)

    assert 0 == runpod_emulator.counters().total


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_avalidate_says_the_same_asynchronously(runpod_emulator, anyio_backend):
    """Credentials.avalidate answers as validate does."""
    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host])
    assert KeyStatus.ACCEPTED == (await credentials.avalidate(runpod_emulator.api_url)).status
