"""Every HTTP refusal batchlog answers, in one place: status, code, param and message.

Each function returns the exception to raise (a ``DomainError``), so a raise site names
the case (``raise refusals.file_in_use(file_id, batch_id)``) and never words it. The
façade shapes any of them into OpenAI's envelope (batches/api/errors.py). Wording is
OpenAI's where its response for the same case is recorded or well known (the
"Invalid URL (GET /x)" of an unknown route, "You didn't provide an API key.", "The
server had an error while processing your request.", "No such File object: <id>"), and
in its style elsewhere. Batch validation errors (``batch.errors.data``) and the create
parameter wording are in ``messages``; docs/errors.md lists both.
"""

from __future__ import annotations

from batches.domain.errors import (
    ConcurrentUpdate,
    ConflictingIdempotencyKeys,
    FileInUse,
    IdempotencyConflict,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    RateLimited,
    Refused,
    StorageUnavailable,
)
from batches.domain.messages import echo, invalid_value, missing_parameter

# --- the gate (before a route reads the body) -----------------------------------------


def missing_api_key() -> Refused:
    return Refused(401, "You didn't provide an API key.", code="missing_api_key")


def invalid_api_key() -> Refused:
    return Refused(401, "Incorrect API key provided.", code="invalid_api_key")


def host_not_allowed() -> Refused:
    return Refused(400, "Host header not allowed.", code="invalid_host")


def overloaded() -> Refused:
    return Refused(503, "The server is overloaded; retry later.", code="overloaded")


def too_many_connections() -> Refused:
    """More connections open than ``max_connections``: answered, then closed."""
    return Refused(
        503,
        "The server has too many open connections; retry later.",
        code="overloaded",
        headers={"connection": "close"},
    )


def upload_not_multipart() -> Refused:
    return Refused(415, "Uploads must be multipart/form-data.", code="unsupported_media_type")


def body_not_json() -> Refused:
    return Refused(415, "Request bodies must be application/json.", code="unsupported_media_type")


def request_too_large(limit: int) -> Refused:
    return Refused(413, f"Request body is larger than {limit} bytes.", code="request_too_large")


def insufficient_storage(floor: int) -> Refused:
    return Refused(
        507,
        f"The server has less than {floor} bytes of free disk space; uploads and new "
        "batches are refused until space is freed.",
        code="insufficient_storage",
    )


def body_too_slow() -> Refused:
    return Refused(
        408,
        "The request body arrived too slowly.",
        code="request_timeout",
        headers={"connection": "close"},
    )


# --- any route ---------------------------------------------------------------------------


def invalid_url(method: str, path: str) -> Refused:
    """No route has this path (OpenAI's wording; code null)."""
    return Refused(404, f"Invalid URL ({method} {echo(path, 200)})", code=None)


def invalid_method(method: str, path: str) -> Refused:
    """A route has this path, not this method (OpenAI's wording; code null)."""
    return Refused(405, f"Invalid method for URL ({method} {echo(path, 200)})", code=None)


def http_error(status: int) -> Refused:
    """Any other refusal the web framework makes itself (rare: the routes raise ours)."""
    return Refused(status, f"The request could not be served (HTTP {status}).", code=None)


def server_error() -> Refused:
    return Refused(
        500, "The server had an error while processing your request.", code="server_error"
    )


# --- JSON bodies (POST /v1/batches) ---------------------------------------------------


def unparseable_json_body() -> Refused:
    return Refused(400, "We could not parse the JSON body of your request.", code="invalid_json")


def body_not_an_object() -> Refused:
    return Refused(400, "The request body must be a JSON object.", code="invalid_request")


# --- uploads (POST /v1/files) -----------------------------------------------------------


def file_too_large(limit: int) -> Refused:
    return Refused(
        400, f"File is larger than the {limit} byte limit.", code="file_too_large", param="file"
    )


def multipart_no_boundary() -> Refused:
    return Refused(400, "The multipart body has no boundary.", code="invalid_request")


def multipart_malformed() -> Refused:
    return Refused(400, "The multipart body is malformed.", code="invalid_request")


def too_many_form_fields(limit: int) -> Refused:
    return Refused(
        400, f"The form has more than {limit} fields.", code="invalid_request", param=None
    )


def one_file_field() -> Refused:
    return Refused(
        400, "Send exactly one file, as the field 'file'.", code="invalid_request", param="file"
    )


def form_field_too_large(name: str, limit: int) -> Refused:
    return Refused(
        400,
        f"Form field '{echo(name)}' is larger than {limit} bytes.",
        code="invalid_request",
        param=echo(name),
    )


def missing_upload_field(name: str) -> Refused:
    """``purpose`` or ``file``: OpenAI's missing-parameter wording."""
    return Refused(400, missing_parameter(name), code="missing_required_parameter", param=name)


def invalid_purpose(purpose: str, allowed: list[str]) -> Refused:
    return Refused(
        400, invalid_value("purpose", purpose, allowed), code="invalid_value", param="purpose"
    )


def upload_purpose_not_batch() -> Refused:
    return Refused(
        400,
        "Only purpose 'batch' can be uploaded to this server.",
        code="invalid_value",
        param="purpose",
    )


def empty_upload() -> Refused:
    return Refused(400, "The uploaded file is empty.", code="empty_file", param="file")


def invalid_expires_after_anchor(anchor: object) -> Refused:
    param = "expires_after[anchor]"
    return Refused(
        400, invalid_value(param, anchor, ["created_at"]), code="invalid_value", param=param
    )


def invalid_expires_after_seconds(value: object) -> Refused:
    param = "expires_after[seconds]"
    return Refused(
        400,
        f"Invalid '{param}': expected an integer between 3600 and 2592000, but got "
        f"{echo(value)} instead.",
        code="invalid_value",
        param=param,
    )


def file_content_gone(file_id: str) -> Refused:
    return Refused(
        404,
        f"The content of file {echo(file_id)} is gone.",
        code="file_missing",
        param="file_id",
    )


# --- files and batches in the catalog ----------------------------------------------------


def file_not_found(file_id: str) -> NotFound:
    """OpenAI's wording for a file this tenant cannot see."""
    return NotFound(f"No such File object: {echo(file_id)}", param="file_id")


def batch_not_found(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{echo(batch_id)}'.", param="batch_id")


def input_file_wrong_purpose() -> InvalidRequest:
    return InvalidRequest(
        "The input file must be uploaded with purpose 'batch'.",
        param="input_file_id",
        code="invalid_input_file_id",
    )


def cannot_transition(verb: str, status: str) -> InvalidTransition:
    """e.g. "Cannot cancel a batch with status 'completed'." (409)."""
    return InvalidTransition(f"Cannot {verb} a batch with status '{status}'.")


def file_in_use(file_id: str, batch_id: str) -> FileInUse:
    return FileInUse(
        f"File {echo(file_id)} is the input of batch {batch_id}, which has not finished; "
        "delete it after the batch ends (or cancel the batch first).",
        param="file_id",
    )


def concurrent_update(stream: str, expected: int, actual: int) -> ConcurrentUpdate:
    return ConcurrentUpdate(
        f"{stream} changed while this request was decided (expected version "
        f"{expected}, found {actual}); retry."
    )


def storage_message(fault: str) -> str:
    """Also the ``error`` of /health while the log refuses writes."""
    return f"The server could not write to its storage ({fault}); nothing was changed. Retry later."


def storage_unavailable(fault: str) -> StorageUnavailable:
    return StorageUnavailable(storage_message(fault))


# --- per-tenant limits (429 with Retry-After) ------------------------------------------


def stored_bytes_limit(would_store: int, limit: int) -> RateLimited:
    return RateLimited(
        f"Your uploaded files would take {would_store} bytes, over the {limit} byte limit "
        "per tenant; delete some files first.",
        retry_after_s=60.0,
        param="file",
    )


def queued_batches_limit(queued: int) -> RateLimited:
    return RateLimited(
        f"You have {queued} batches waiting to run, the limit per tenant; retry when some "
        "have started.",
        retry_after_s=30.0,
    )


def create_rate_limit(per_minute: float, wait_s: float) -> RateLimited:
    return RateLimited(
        f"Too many batch creates: the limit is {per_minute:g} per minute per tenant.",
        retry_after_s=wait_s,
    )


# --- idempotency -------------------------------------------------------------------------


def idempotency_key_reused() -> IdempotencyConflict:
    return IdempotencyConflict("This idempotency key was already used with different parameters.")


def conflicting_idempotency_keys() -> ConflictingIdempotencyKeys:
    return ConflictingIdempotencyKeys(
        "The request names different idempotency keys (idempotency_key, idem_tok, "
        "Idempotency-Key header); send one key."
    )


def invalid_idempotency_header(problem: str = "") -> InvalidRequest:
    """``problem``: "escape" or "character" for a bad quoted string, else the whole header."""
    return InvalidRequest(
        f"Invalid {problem + ' in ' if problem else ''}Idempotency-Key header.",
        param="Idempotency-Key",
    )


def idempotency_key_length(limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"Idempotency-Key must be 1 to {limit} characters.", param="Idempotency-Key"
    )


# --- the live-stream extension -----------------------------------------------------------


def invalid_last_event_id() -> Refused:
    return Refused(
        400,
        "Invalid 'Last-Event-ID': expected a non-negative integer (an event's id).",
        code="invalid_value",
        param="Last-Event-ID",
    )


# --- create parameters the decider checks -------------------------------------------------


def invalid_create_value(param: str, value: object, allowed: list[str]) -> InvalidRequest:
    return InvalidRequest(invalid_value(param, value, allowed), param=param, code="invalid_value")


# --- the decider's invariants (a client meets these only through a bug or a race) --------


def batch_exists(batch_id: str) -> InvalidTransition:
    return InvalidTransition(f"Batch {batch_id} already exists.", code="batch_exists")


def no_such_batch() -> NotFound:
    """A command for a batch with no events (the façade answers ``batch_not_found`` first)."""
    return NotFound("No such batch.", param="batch_id")


def outcome_line_out_of_range(line: object, total: int, batch_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Outcome line {line!r} is outside 1..{total} of batch {batch_id}.", param="line"
    )


def requests_without_outcome(batch_id: str, left: int) -> InvalidTransition:
    return InvalidTransition(f"Cannot finalize batch {batch_id}: {left} requests have no outcome.")


def not_yet_expired(batch_id: str, expires_at: int) -> InvalidTransition:
    return InvalidTransition(
        f"Cannot expire batch {batch_id} before its expires_at ({expires_at})."
    )
