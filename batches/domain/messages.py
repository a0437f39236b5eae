"""Batch validation errors and parameter wording, as OpenAI's recorded ones.

Where OpenAI's wording is known (reference/openai-batch-api.md, "Recorded OpenAI
errors", and the recordings quoted by the peers' test suites) it is copied exactly;
the rest follow the same style ("Invalid type for 'x': expected ..., but got ...").
Every other refusal (status, code, message) is in ``refusals``; docs/errors.md lists both.

A value the user sent is never echoed whole: ``echo`` cuts it, so a 100 KB custom_id
cannot make every GET of its batch 10 MB (issue 10). ``bound_errors`` caps the list a
failed batch keeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Error = dict[str, Any]

MAX_ECHO_CHARS = 64
"""A user value quoted in a message is cut to this many characters."""
MAX_CUSTOM_ID_CHARS = 512
"""OpenAI documents no limit; batchlog states this one (output lines repeat the id)."""
MAX_ERRORS = 100
"""A failed batch keeps at most this many validation errors..."""
MAX_ERRORS_CHARS = 32_768
"""...and at most this many characters of messages in all."""
MAX_MESSAGE_CHARS = 1_000
"""No single message is longer than this (messages from other sources are cut too)."""

# The name OpenAI puts before "Streaming is not supported in the Batch API."
ENDPOINT_API_NAMES: dict[str, str] = {
    "/v1/chat/completions": "Chat Completions",
    "/v1/completions": "Completions",
    "/v1/embeddings": "Embeddings",
    "/v1/responses": "Responses",
    "/v1/moderations": "Moderations",
}


def echo(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """``value`` as text, cut to ``limit`` characters (marked with an ellipsis)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, with its article, as OpenAI words it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def supported(values: Sequence[str]) -> str:
    """``'a', 'b', and 'c'``: OpenAI's list of supported values."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def error(code: str, message: str, line: int | None = None, param: str | None = None) -> Error:
    """One entry of ``batch.errors.data``."""
    return {"code": code, "message": message, "param": param, "line": line}


# --- messages shared by create parameters and input lines ------------------------------


def missing_parameter(param: str) -> str:
    return f"Missing required parameter: '{param}'."


def invalid_type(param: str, expected: str, value: Any) -> str:
    return f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead."


def invalid_value(param: str, value: Any, allowed: Sequence[str]) -> str:
    """A bad enumerated value, as the issue's and docs' recorded OpenAI errors word it:
    "Invalid endpoint: /v1/invalid/endpoint. Supported values: ..."."""
    return f"Invalid {param}: {echo(value)}. Supported values: {supported(allowed)}."


def string_too_long(param: str, limit: int, length: int) -> str:
    return (
        f"Invalid '{param}': string too long. Expected a string with maximum length "
        f"{limit}, but got a string with length {length} instead."
    )


def empty_string(param: str) -> str:
    return (
        f"Invalid '{param}': empty string. Expected a string with minimum length 1, "
        "but got an empty string instead."
    )


# --- batch validation (batch.errors.data) ------------------------------------------------


def input_file_not_found(file_id: str) -> Error:
    """OpenAI's recorded error for an unknown input_file_id (the create itself succeeds)."""
    return error(
        "invalid_request",
        f"Cannot find file {echo(file_id)}, or this tenant does not have access to it.",
        None,
        "file_id",
    )


def invalid_json_line(n: int) -> Error:
    return error("invalid_json_line", "This line is not parseable as valid JSON.", n)


def not_an_object_line(n: int) -> Error:
    return error("invalid_json_line", "This line is not a JSON object.", n)


def missing_line_field(n: int, name: str) -> Error:
    return error("missing_required_parameter", missing_parameter(name), n, name)


def line_wrong_type(n: int, param: str, expected: str, value: Any) -> Error:
    return error("invalid_request", invalid_type(param, expected, value), n, param)


def empty_custom_id(n: int) -> Error:
    return error("invalid_request", empty_string("custom_id"), n, "custom_id")


def custom_id_too_long(n: int, length: int) -> Error:
    return error(
        "invalid_request",
        string_too_long("custom_id", MAX_CUSTOM_ID_CHARS, length),
        n,
        "custom_id",
    )


def duplicate_custom_id(n: int, custom_id: str) -> Error:
    return error(
        "duplicate_custom_id",
        f"The custom_id '{echo(custom_id)}' is used more than once in this file.",
        n,
        "custom_id",
    )


def invalid_method(n: int, method: Any) -> Error:
    return error("invalid_request", invalid_value("method", method, ("POST",)), n, "method")


def url_mismatch(n: int) -> Error:
    return error(
        "invalid_url",
        "The URL provided for this request does not match the batch endpoint.",
        n,
        "url",
    )


def body_field_required(n: int, field: str) -> Error:
    """OpenAI's "Model parameter is required." / "Messages parameter is required."."""
    return error(
        "invalid_request", f"{field.capitalize()} parameter is required.", n, f"body.{field}"
    )


def streaming_unsupported(n: int, endpoint: str) -> Error:
    api = ENDPOINT_API_NAMES.get(endpoint, endpoint)
    return error(
        "streaming_unsupported",
        f"{api}: Streaming is not supported in the Batch API.",
        n,
        "body.stream",
    )


def model_not_found(n: int, model: str) -> Error:
    return error(
        "model_not_found",
        f"The provided model '{echo(model)}' is not supported by the Batch API.",
        n,
        "body.model",
    )


def mismatched_model(n: int, model: str, first: str) -> Error:
    return error(
        "mismatched_model",
        f"The model '{echo(model)}' differs from the file's model '{echo(first)}'; "
        "a batch uses one model.",
        n,
        "body.model",
    )


def line_too_large(n: int, limit: int) -> Error:
    return error("line_too_large", f"This line exceeds the limit of {limit} bytes.", n)


def file_too_large(n: int, limit: int) -> Error:
    return error("file_too_large", f"The input file exceeds the limit of {limit} bytes.", n)


def too_many_requests(n: int, limit: int) -> Error:
    return error(
        "too_many_requests", f"The input file has more than {limit} requests (the limit).", n
    )


def empty_file() -> Error:
    return error("empty_file", "The input file has no requests.", None)


def batch_gave_up(crashes: int, error: str) -> str:
    """The message of ``batch_crashed`` (its actor kept failing; batches/core/restarts.py)."""
    return f"The batch failed {crashes} times in a row and was stopped: {error[:300]}"


def bound_errors(errors: Iterable[Mapping[str, Any]]) -> list[Error]:
    """At most MAX_ERRORS entries and MAX_ERRORS_CHARS of messages; each message cut.

    Pure and deterministic, so it can run in evolve: a log written before the bound
    existed is bounded when replayed too.
    """
    out: list[Error] = []
    used = 0
    for e in errors:
        message = e.get("message")
        if isinstance(message, str) and len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "..."
        size = len(message) if isinstance(message, str) else 0
        if len(out) >= MAX_ERRORS or used + size > MAX_ERRORS_CHARS:
            break
        used += size
        out.append(
            {
                "code": e.get("code"),
                "message": message,
                "param": _cut(e.get("param")),
                "line": e.get("line"),
            }
        )
    return out


def _cut(value: Any) -> Any:
    return echo(value, 200) if isinstance(value, str) else value


# --- create parameters and query parameters (HTTP 400; the rest are in refusals) ----------


# pydantic's constraint failures, by error type: (code, message(param, value, ctx)).
_PYDANTIC_TYPES: dict[str, str] = {
    "string_type": "a string",
    "dict_type": "an object",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "list_type": "an array",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def parameter_error(
    errors: Sequence[Mapping[str, Any]], allowed: Mapping[str, Sequence[str]] | None = None
) -> tuple[str, str, str | None]:
    """``(code, message, param)`` for pydantic's first complaint, never pydantic's words.

    ``errors`` is pydantic's (or FastAPI's) ``.errors()`` list. ``allowed`` names the
    supported values of enumerated parameters (e.g. endpoint), so a bad one reads
    "Invalid endpoint: x. Supported values: ...".
    """
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    if loc and loc[-1] == "[key]":
        loc = loc[:-2]  # a bad key: name the object, not the (user's) key
    param = echo(".".join(loc), 200) if loc else None
    name = param or "body"
    kind = first.get("type", "")
    value = first.get("input")
    ctx = first.get("ctx") or {}
    if kind == "missing":
        return "missing_required_parameter", missing_parameter(name), param
    if kind in ("literal_error", "enum"):
        choices = (allowed or {}).get(name) or _expected(ctx)
        return "invalid_value", invalid_value(name, value, choices), param
    if kind in _PYDANTIC_TYPES:
        # OpenAI's recorded create errors use invalid_value for every bad parameter.
        return "invalid_value", invalid_type(name, _PYDANTIC_TYPES[kind], value), param
    if kind == "string_too_long":
        length = len(value) if isinstance(value, str) else 0
        return "invalid_value", string_too_long(name, int(ctx.get("max_length", 0)), length), param
    if kind == "string_too_short":
        return "invalid_value", empty_string(name), param
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        message = (
            f"Invalid '{name}': integer below minimum value. Expected a value >= {bound}, "
            f"but got {echo(value)} instead."
        )
        return "invalid_value", message, param
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        message = (
            f"Invalid '{name}': integer above maximum value. Expected a value <= {bound}, "
            f"but got {echo(value)} instead."
        )
        return "invalid_value", message, param
    if kind == "value_error":
        # Our own validators word their message; pydantic prefixes "Value error, ".
        reason = str(first.get("msg", "")).removeprefix("Value error, ")
        return "invalid_value", f"Invalid '{name}': {reason}.", param
    return "invalid_value", f"Invalid value for '{name}'.", param


def _expected(ctx: Mapping[str, Any]) -> list[str]:
    """The values of pydantic's ``expected`` text ("'a', 'b' or 'c'"), for a Literal."""
    text = str(ctx.get("expected", "")).replace(" or ", ",")
    return [part.strip(" '") for part in text.split(",") if part.strip(" '")]


def too_many_metadata_pairs(limit: int, got: int) -> str:
    """The reason (completed by ``parameter_error``) for a metadata object too large."""
    return (
        f"too many properties. Expected an object with at most {limit} properties, "
        f"but got an object with {got} properties instead"
    )
