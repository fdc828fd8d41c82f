"""`also_as`: one of our errors, copied as an instance of the errors it stands for."""

from __future__ import annotations

import requests

from resilient_runpod._errors import ResilientRunPodError, TransientError, also_as


def transient() -> TransientError:
    """A give-up after two lost connections, with its cause."""
    error = TransientError(
        "GET https://api.runpod.ai/v2/e/health failed with ConnectionError",
        reason="exhausted",
        status_code=None,
        history=[("ConnectionError", 0.1), ("ConnectionError", None)],
    )
    error.__cause__ = requests.ConnectionError("refused")
    return error


def test_the_copy_is_both_classes_and_keeps_everything():
    """Message, attributes, cause and class name survive; the extra attributes are set."""
    error = transient()
    copy = also_as(error, requests.ConnectionError, request=None, response=None)
    assert isinstance(copy, TransientError)
    assert isinstance(copy, requests.ConnectionError)
    assert isinstance(copy, ResilientRunPodError)
    assert (str(error), error.args) == (str(copy), copy.args)
    assert (error.reason, error.status_code, error.history) == (
        copy.reason,
        copy.status_code,
        copy.history,
    )
    assert error.__cause__ is copy.__cause__
    assert (None, None) == (copy.request, copy.response)
    assert "TransientError" == type(copy).__name__


def test_one_class_per_pair_and_nothing_made_when_nothing_is_missing():
    """The same bases give the same class; an error that already is them comes back as is."""
    first = also_as(transient(), requests.ConnectionError)
    assert type(first) is type(also_as(transient(), requests.ConnectionError))
    assert first is also_as(first, requests.ConnectionError, requests.RequestException)
