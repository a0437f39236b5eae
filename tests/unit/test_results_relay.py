"""A DomainError sent across Ray as data comes back as the same error for the façade."""

from __future__ import annotations

import pytest

from actors.results import RelayedError, error_result, is_error, raise_if_error
from batches.domain.errors import DomainError, IdempotencyConflict, NotFound, StorageUnavailable


@pytest.mark.parametrize(
    "err",
    [
        NotFound("No such Batch object: b", param="batch_id"),
        IdempotencyConflict("reused"),
        StorageUnavailable("disk full"),
    ],
)
def test_round_trip_keeps_status_code_param_headers_and_type(err: DomainError) -> None:
    record = error_result(err)
    assert is_error(record)
    with pytest.raises(RelayedError) as info:
        raise_if_error(record)
    back = info.value
    assert isinstance(back, DomainError)
    assert (back.http_status, back.code, back.message, back.param, back.headers) == (
        err.http_status,
        err.code,
        err.message,
        err.param,
        err.headers,
    )
    assert back.envelope()["error"]["type"] == err.envelope()["error"]["type"]


def test_values_pass_through() -> None:
    assert raise_if_error({"id": "batch_1"}) == {"id": "batch_1"}
    assert not is_error([1, 2])
