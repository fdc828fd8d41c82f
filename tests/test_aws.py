"""`recovery.from_aws_secrets_manager`, against moto's AWS emulator served over real HTTP."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from resilient_runpod import Credentials, RecoveryContext, ResilientTransport, SourceError, recovery
from resilient_runpod._keys import fingerprint, key_id

from .conftest import REGION, Aws
from .helpers import make_key

if TYPE_CHECKING:
    from resilient_runpod.testing import Emulator


def context_for(key: str) -> RecoveryContext:
    return RecoveryContext(fingerprint(key), 1, 401, "GET", "https://api.runpod.ai/x", key_id(key))


def test_rotation_is_recovered_from_awscurrent(aws, runpod_emulator):
    """The key is rotated in Secrets Manager and on RunPod: the 401 recovers AWSCURRENT's key."""
    old = runpod_emulator.api_key
    name = aws.secret(old)
    credentials = Credentials(old, aws.hook(name), hosts=[runpod_emulator.host])
    new = runpod_emulator.rotate(old)
    aws.client.put_secret_value(SecretId=name, SecretString=new)

    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        response = client.get(f"{runpod_emulator.serverless_url}/ep/health")

    assert (200, new, f"aws:{name}") == (
        response.status_code,
        credentials.api_key,
        credentials.source,
    )


def test_json_secret_is_read_through_field(aws):
    """A JSON secret gives the key in the named field; its trailing newline is removed."""
    key = make_key()
    name = aws.secret(json.dumps({"api_key": key + "\n", "owner": "ml-platform"}))

    found = aws.hook(name, field="api_key")(context_for(make_key()))

    assert (key, f"aws:{name}#api_key") == (found.key, found.source)


def test_json_secret_without_field_names_its_fields(aws):
    """A JSON secret read as a plain string fails, naming the fields to choose from."""
    key = make_key()
    name = aws.secret(json.dumps({"api_key": key, "owner": "ml"}))

    with pytest.raises(SourceError) as raised:
        aws.hook(name)(context_for(make_key()))

    assert "'api_key', 'owner'" in str(raised.value)
    assert key not in str(raised.value)


def test_missing_field_is_named(aws):
    """A field the JSON secret lacks: the error names it and the fields there are."""
    key = make_key()
    name = aws.secret(json.dumps({"token": key}))

    with pytest.raises(SourceError) as raised:
        aws.hook(name, field="api_key")(context_for(make_key()))

    assert "no field 'api_key'; its fields are: 'token'" in str(raised.value)
    assert key not in str(raised.value)


def test_awspending_is_used_when_awscurrent_is_the_rejected_key(aws, runpod_emulator):
    """Mid-rotation, AWSCURRENT is still the revoked key: the 401 recovers AWSPENDING's key."""
    old = runpod_emulator.api_key
    name = aws.secret(old)
    new = runpod_emulator.rotate(old)
    aws.client.put_secret_value(SecretId=name, SecretString=new, VersionStages=["AWSPENDING"])
    credentials = Credentials(old, aws.hook(name), hosts=[runpod_emulator.host])

    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        response = client.get(f"{runpod_emulator.serverless_url}/ep/health")

    assert (200, new, f"aws:{name}:AWSPENDING") == (
        response.status_code,
        credentials.api_key,
        credentials.source,
    )


def test_awscurrent_wins_when_it_is_not_the_rejected_key(aws):
    """A pending version is not used while AWSCURRENT differs from the rejected key."""
    current, pending = make_key(), make_key()
    name = aws.secret(current)
    aws.client.put_secret_value(SecretId=name, SecretString=pending, VersionStages=["AWSPENDING"])

    found = aws.hook(name)(context_for(make_key()))

    assert current == found.key


def test_no_pending_version_returns_the_current_key(aws):
    """No rotation in progress: the current key comes back, for the engine to judge."""
    current = make_key()
    name = aws.secret(current)

    found = aws.hook(name)(context_for(current))

    assert (current, f"aws:{name}") == (found.key, found.source)


def test_missing_secret_names_the_secret_and_the_region(aws):
    """A secret that does not exist: the error names it and the region to check."""
    with pytest.raises(SourceError) as raised:
        aws.hook("runpod/does-not-exist")(context_for(make_key()))

    message = str(raised.value)
    assert "'runpod/does-not-exist' in region us-east-1" in message
    assert "check the secret's name or ARN and the region" in message


def test_wrong_credentials_say_so(aws, monkeypatch):
    """moto checking signatures: unknown credentials give an error naming the credentials."""
    import moto.settings

    name = aws.secret(make_key())
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)

    with pytest.raises(SourceError) as raised:
        aws.hook(name)(context_for(make_key()))

    assert "AWS rejected the credentials" in str(raised.value)
    assert "InvalidClientTokenId" in str(raised.value)


def test_missing_permission_names_the_action(aws, monkeypatch):
    """A real IAM user without a policy: the error names the permission to grant."""
    import boto3
    import moto.settings

    key = make_key()
    name = aws.secret(key)
    iam = boto3.client("iam", region_name=REGION, endpoint_url=aws.url)
    user = f"reader-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    access = iam.create_access_key(UserName=user)["AccessKey"]
    session = boto3.session.Session(
        aws_access_key_id=access["AccessKeyId"],
        aws_secret_access_key=access["SecretAccessKey"],
        region_name=REGION,
    )
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)

    with pytest.raises(SourceError) as raised:
        recovery.from_aws_secrets_manager(name, endpoint_url=aws.url, session=session)(
            context_for(make_key())
        )

    assert "needs secretsmanager:GetSecretValue" in str(raised.value)
    assert key not in str(raised.value)


def test_a_callers_client_is_used_as_it_is(aws):
    """With client=, no client is made: the caller's endpoint and region are the ones used."""
    key = make_key()
    name = aws.secret(key)

    found = recovery.from_aws_secrets_manager(name, client=aws.client)(context_for(make_key()))

    assert key == found.key


def test_binary_secret_is_refused(aws):
    """A secret stored as binary is not a key: the error says to store a string."""
    name = f"runpod/{uuid.uuid4().hex[:8]}"
    aws.client.create_secret(Name=name, SecretBinary=b"\x00\x01")

    with pytest.raises(SourceError) as raised:
        aws.hook(name)(context_for(make_key()))

    assert "store the key as a SecretString" in str(raised.value)


def test_without_boto3_the_error_says_what_to_install(monkeypatch):
    """No boto3: making the hook raises ImportError with the extra to install."""
    monkeypatch.setitem(sys.modules, "boto3", None)

    with pytest.raises(ImportError) as raised:
        recovery.from_aws_secrets_manager("runpod")

    assert "pip install 'resilient-runpod[aws]'" in str(raised.value)


def _legacy_key() -> str:
    """A key of RunPod's older shape: no ``rpa_`` prefix for a pattern to find."""
    return uuid.uuid4().hex.upper() + uuid.uuid4().hex.upper()[:8]


@pytest.mark.parametrize("field", [None, "api_key"])
def test_a_legacy_key_read_at_debug_is_in_no_log_record(
    field: str | None, aws: Aws, runpod_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """With every logger at DEBUG, a rotation recovers a legacy key from Secrets Manager:
    botocore's record of the answer (``SecretString`` and all) is kept out of the logs, and
    no record of any library shows the key. Before, ``botocore.parsers`` logged the body.
    """
    legacy = _legacy_key()
    runpod_emulator.add_key(legacy)
    old = runpod_emulator.api_key
    name = aws.secret(json.dumps({field: legacy}) if field else legacy)
    caplog.set_level(logging.DEBUG)

    credentials = Credentials(old, aws.hook(name, field=field), hosts=[runpod_emulator.host])
    runpod_emulator.revoke(old)
    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        response = client.get(f"{runpod_emulator.serverless_url}/ep/health")

    ours = [r for r in caplog.records if not r.name.startswith(("moto", "werkzeug"))]
    assert (200, legacy) == (response.status_code, credentials.api_key)
    assert any(r.name == "botocore.parsers" for r in ours)  # botocore did log the answer
    assert [] == [r.name for r in ours if legacy in caplog.handler.format(r)]
