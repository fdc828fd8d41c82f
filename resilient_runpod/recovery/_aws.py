"""`from_aws_secrets_manager`: read the key from AWS Secrets Manager, the fleet's source of truth.

It reads the secret's ``AWSCURRENT`` version. While a rotation is in progress the new
key may still be ``AWSPENDING``: when ``AWSCURRENT`` is the very key RunPod rejected, the
pending version is tried. boto3 comes with the ``aws`` extra and is imported only when
a hook is made. Every failure is a `SourceError` that names what to fix (the secret's
name, the region, the credentials, a permission, a JSON field), never the secret.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

from .._errors import SourceError
from .._hosts import redact_text
from .._keys import key_id
from .._logging import reading_secret
from ..typing import RecoveredKey, RecoveryContext
from ._sources import _clean_or_raise

__all__ = ["FromAwsSecretsManager", "from_aws_secrets_manager"]

_INSTALL_HINT = "from_aws_secrets_manager needs boto3: pip install 'resilient-runpod[aws]'"
_CURRENT = "AWSCURRENT"
_PENDING = "AWSPENDING"

# AWS error codes, grouped by what the person has to fix.
_BAD_CREDENTIALS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredTokenException",
        "ExpiredToken",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
_NOT_ALLOWED = frozenset({"AccessDeniedException", "AccessDenied"})
_NOT_FOUND = "ResourceNotFoundException"


class _NoPendingVersionError(Exception):
    """The secret has no AWSPENDING version: no rotation is in progress."""


def _boto3() -> Any:
    try:
        import boto3  # noqa: PLC0415 -- optional dependency, see _INSTALL_HINT
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT, name="boto3") from exc
    return boto3


class FromAwsSecretsManager:
    """Read a key from AWS Secrets Manager. See `from_aws_secrets_manager`."""

    def __init__(
        self,
        secret_id: str,
        *,
        field: str | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
        session: Any = None,
    ) -> None:
        if not secret_id:
            raise ValueError("from_aws_secrets_manager() needs the secret's name or ARN")
        if client is None and session is None:
            _boto3()  # fail at start-up, with the install hint, not at the first 401
        self.secret_id = secret_id
        self.field = field
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self.name = f"aws:{secret_id}" + (f"#{field}" if field else "")
        self._given_client = client
        self._session = session
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()

    def __call__(self, context: RecoveryContext | None = None) -> RecoveredKey:
        """Return ``AWSCURRENT``'s key; ``AWSPENDING``'s if the current one was rejected.

        Raises:
            SourceError: the secret is missing, unreadable, or holds no usable key.
        """
        client = self._get_client()
        current = self._read(client, _CURRENT)
        if context is not None and context.key_id and key_id(current) == context.key_id:
            try:
                pending = self._read(client, _PENDING)
            except _NoPendingVersionError:
                pending = current
            if pending != current:
                return RecoveredKey(pending, f"{self.name}:{_PENDING}")
        return RecoveredKey(current, self.name)

    def _get_client(self) -> Any:
        if self._given_client is not None:
            return self._given_client
        with self._lock:
            # boto3 clients are thread-safe but not fork-safe: a forked worker makes its own.
            if self._client is None or self._client_pid != os.getpid():
                session = self._session or _boto3().session.Session()
                self._client = session.client(
                    "secretsmanager",
                    region_name=self.region_name,
                    endpoint_url=self.endpoint_url,
                )
                self._client_pid = os.getpid()
            return self._client

    def _read(self, client: Any, stage: str) -> str:
        """The key in version *stage*; raises `_NoPendingVersionError` for a missing AWSPENDING."""
        import botocore.exceptions  # noqa: PLC0415 -- present whenever a client is

        where = self._where(client)
        try:
            # botocore logs the whole answer at DEBUG, SecretString included.
            with reading_secret():
                response = client.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        except botocore.exceptions.ClientError as exc:
            code, message = _code_and_message(exc.response.get("Error", {}))
            if code == _NOT_FOUND and stage == _PENDING:
                raise _NoPendingVersionError from None
            raise SourceError(self._explain(code, message, where)) from None
        except botocore.exceptions.NoCredentialsError:
            raise SourceError(
                f"no AWS credentials to read {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an IAM role"
            ) from None
        except botocore.exceptions.NoRegionError:
            raise SourceError(
                f"no AWS region to read secret {self.secret_id!r} in: pass "
                "region_name= or set AWS_REGION"
            ) from None
        except botocore.exceptions.EndpointConnectionError as exc:
            raise SourceError(
                f"cannot reach AWS Secrets Manager for {where} ({exc}): check the region, "
                "endpoint_url and the network"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise SourceError(f"cannot read {where}: {type(exc).__name__}: {exc}") from None
        return self._key_in(response, stage, where)

    def _where(self, client: Any) -> str:
        region = getattr(getattr(client, "meta", None), "region_name", None) or self.region_name
        return f"secret {self.secret_id!r} in region {region or '(none)'}"

    def _explain(self, code: str, message: str, where: str) -> str:
        if code == _NOT_FOUND:
            return (
                f"AWS Secrets Manager has no {where} (or it has no {_CURRENT} version): "
                "check the secret's name or ARN and the region"
            )
        if code in _NOT_ALLOWED:
            return (
                f"not allowed to read {where}: the AWS identity in use needs "
                "secretsmanager:GetSecretValue on it (and kms:Decrypt on its KMS key, if it "
                "has its own)"
            )
        if code in _BAD_CREDENTIALS:
            return (
                f"AWS rejected the credentials used to read {where} ({code}): check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and refresh an "
                "expired session"
            )
        if code == "DecryptionFailure":
            return f"AWS could not decrypt {where}: check kms:Decrypt on the secret's KMS key"
        # Other codes (throttling, a secret scheduled for deletion): AWS's own words say it.
        return f"cannot read {where}: {code}: {redact_text(message)}"

    def _key_in(self, response: dict[str, Any], stage: str, where: str) -> str:
        text = response.get("SecretString")
        label = f"{where} ({stage})"
        if not isinstance(text, str):
            raise SourceError(
                f"{label} holds binary data, not text: store the key as a SecretString"
            )
        if self.field is None:
            fields = _json_fields(text)
            if fields is not None:
                raise SourceError(
                    f"{label} is JSON with the fields {', '.join(map(repr, fields))}: "
                    "name the one with the key, field=..."
                )
            return _clean_or_raise(text, label)
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise SourceError(
                f"{label} is not a JSON object, so it has no field {self.field!r}: store "
                f'{{"{self.field}": "<key>"}} in it, or drop field='
            )
        if self.field not in document:
            names = ", ".join(map(repr, sorted(document))) or "none"
            raise SourceError(f"{label} has no field {self.field!r}; its fields are: {names}")
        value = document[self.field]
        if not isinstance(value, str):
            raise SourceError(
                f"{label} field {self.field!r} is a {type(value).__name__}, not a string"
            )
        return _clean_or_raise(value, f"{label} field {self.field!r}")

    def __repr__(self) -> str:
        field = f", field={self.field!r}" if self.field else ""
        region = f", region_name={self.region_name!r}" if self.region_name else ""
        return f"from_aws_secrets_manager({self.secret_id!r}{field}{region})"


def _code_and_message(error: dict[str, Any]) -> tuple[str, str]:
    """AWS's error code and message, also from an XML error body botocore could not parse.

    Some front ends (IAM authentication in proxies and emulators) answer a JSON API with
    a query-style XML error; botocore then reports the HTTP status as the code and the
    body as the message. The code is still in the body's ``<Code>`` element.
    """
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if code.isdigit():
        found = _XML_CODE.search(message)
        if found:
            code = found.group(1)
            said = _XML_MESSAGE.search(message)
            message = said.group(1) if said else ""
    return code or "UnknownError", message


_XML_CODE = re.compile(r"<Code>\s*([A-Za-z0-9.]+)\s*</Code>")
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.DOTALL)


def _json_fields(text: str) -> list[str] | None:
    """The field names of *text* if it is a JSON object, else None."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return sorted(document) if isinstance(document, dict) else None


def from_aws_secrets_manager(
    secret_id: str,
    *,
    field: str | None = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    client: Any = None,
    session: Any = None,
) -> FromAwsSecretsManager:
    """A hook that reads the key from AWS Secrets Manager (``pip install 'resilient-runpod[aws]'``).

    ::

        recovery.from_aws_secrets_manager("prod/runpod", field="api_key", region_name="eu-west-1")

    Args:
        secret_id: The secret's name or ARN.
        field: For a JSON secret, the field holding the key; ``None`` for a plain string.
        region_name: The AWS region; ``None`` uses boto3's (``AWS_REGION``, the profile).
        endpoint_url: Another endpoint (a VPC endpoint, a local emulator).
        client: Your own ``secretsmanager`` boto3 client; used as it is.
        session: Your own ``boto3.Session`` to make the client from.

    It reads ``AWSCURRENT``; when that is the key RunPod just rejected (a rotation still
    in progress), it reads ``AWSPENDING``. Errors are `SourceError`s that say what to fix:
    the secret's name or region, the credentials, the ``secretsmanager:GetSecretValue``
    permission, a missing JSON field. They never contain the secret.
    """
    return FromAwsSecretsManager(
        secret_id,
        field=field,
        region_name=region_name,
        endpoint_url=endpoint_url,
        client=client,
        session=session,
    )
