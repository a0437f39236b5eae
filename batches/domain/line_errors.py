"""The ``error`` of an output/error-file line that got no HTTP answer (``response: null``).

OpenAI's error file carries ``{"code", "message"}`` for a request that never ran; its
codes for that are ``batch_expired`` and ``batch_cancelled`` (shared/reference/
openai-batch-api.md, "Output and error lines"), worded here as OpenAI words them. The
rest are batchlog's own: an upstream that timed out, could not be reached, broke the
connection or answered too much, a body that cannot be sent, an executor or an
embedded model that failed.
Raise sites name the case (``line_errors.upstream_timeout(url, detail)``), never word
it; docs/errors.md lists them, each with the test that provokes it.
"""

from __future__ import annotations

from batches.domain.executor import LineError
from batches.domain.messages import echo

MAX_DETAIL_CHARS = 500
"""An exception's text quoted in a message is cut to this many characters."""


def _line(code: str, message: str) -> LineError:
    return {"code": code, "message": message}


def _detail(detail: str) -> str:
    return echo(detail, MAX_DETAIL_CHARS)


# --- requests that never ran (OpenAI's) ----------------------------------------------


def batch_expired() -> LineError:
    return _line(
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    )


def batch_cancelled() -> LineError:
    return _line(
        "batch_cancelled", "This request could not be executed before the batch was cancelled."
    )


# --- the HTTP upstream (actors/upstream.py) ------------------------------------------


def upstream_timeout(url: str, detail: str) -> LineError:
    """No answer within the upstream's ``timeout_s`` (connect, or between two reads)."""
    return _line(
        "upstream_timeout", f"The upstream did not answer in time ({url}): {_detail(detail)}"
    )


def upstream_unreachable(url: str, detail: str) -> LineError:
    """The connection could not be made (refused, no route, bad name or URL)."""
    return _line(
        "upstream_unreachable", f"The upstream could not be reached ({url}): {_detail(detail)}"
    )


def upstream_connection_failed(url: str, detail: str) -> LineError:
    """The connection broke, or the upstream spoke broken HTTP."""
    return _line(
        "upstream_error",
        f"The connection to the upstream failed ({url}): {_detail(detail)}",
    )


def upstream_response_too_large(limit: int) -> LineError:
    return _line(
        "upstream_response_too_large",
        f"The upstream's response is larger than the limit of {limit} bytes; it was not read.",
    )


def upstream_not_a_json_object() -> LineError:
    """A 2xx answer whose body is not a JSON object (kept, as text, in the response)."""
    return _line("upstream_error", "The upstream answered with a body that is not a JSON object.")


def body_not_encodable(detail: str) -> LineError:
    """A body the executor cannot send as JSON (e.g. an integer beyond 64 bits)."""
    return _line("upstream_error", f"The request body cannot be encoded as JSON: {_detail(detail)}")


def after_attempts(error: LineError, attempts: int) -> LineError:
    """``error`` of the last of several attempts, saying how many were made."""
    return _line(error["code"], f"{error['message']} (after {attempts} attempts)")


# --- executors ---------------------------------------------------------------------------


def executor_error(detail: str) -> LineError:
    """The executor itself failed (its actor died, Ray failed): the lines it held fail."""
    return _line(
        "executor_error", f"The executor failed while running this request: {_detail(detail)}"
    )


# --- the embedded models (actors/local) ------------------------------------------------


def model_load_failed(model: str, reason: str) -> LineError:
    """The replica could not load the model (a missing or corrupt file)."""
    return _line("model_load_failed", f"The model {model} could not be loaded: {_detail(reason)}")


def model_failed(model: str, reason: str) -> LineError:
    """The model's supervisor gave up on it (it cannot load, or its replicas kept dying)."""
    return _line("model_failed", f"The model {model} failed: {_detail(reason)}")


def replica_failed(model: str, attempts: int, last_death: str | None) -> LineError:
    """Every attempt of a chunk lost its replica; ``last_death`` None: none became ready."""
    why = f"the last died: {_detail(last_death)}" if last_death else "no replica became ready"
    tries = f"{attempts} attempt" + ("" if attempts == 1 else "s")
    return _line(
        "replica_failed", f"The model {model} could not run this request in {tries}: {why}"
    )
