"""An executor's own answer refusing one request: the status and OpenAI error envelope
that stand in a line's ``response`` where a model's answer would (the embedded models'
checks of a request body, an unknown model, a prompt over the context window).

Each function returns the ``RequestError`` to raise (or to turn into an outcome with
``.body()``), so a check names the case and never words it. Wording follows OpenAI's
API ("Missing required parameter: 'messages'.", "Invalid type for 'max_tokens':
expected an integer, but got a string instead.", "The model 'x' does not exist or you
do not have access to it.") through the helpers of ``messages``; docs/errors.md lists
every case. A line that got no answer at all is in ``line_errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batches.domain.errors import error_envelope, error_type
from batches.domain.messages import (
    ENDPOINT_API_NAMES,
    echo,
    empty_string,
    invalid_type,
    invalid_value,
    missing_parameter,
)


class RequestError(Exception):
    """A request the executor cannot serve as given: an HTTP-style outcome."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = "invalid_request",
        status_code: int = 400,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status_code = status_code
        self.type = error_type(status_code)

    def body(self) -> dict[str, Any]:
        return error_envelope(self.message, type=self.type, param=self.param, code=self.code)


# --- the body's parameters --------------------------------------------------------------


def missing(param: str) -> RequestError:
    return RequestError(missing_parameter(param), param=param, code="missing_required_parameter")


def wrong_type(param: str, expected: str, value: Any) -> RequestError:
    """``expected`` with its article, as ``messages.json_type`` words a type."""
    return RequestError(invalid_type(param, expected, value), param=param)


def _number_kind(value: Any) -> str:
    return "integer" if isinstance(value, int) else "decimal"


def below_minimum(param: str, minimum: float, value: float) -> RequestError:
    return RequestError(
        f"Invalid '{param}': {_number_kind(value)} below minimum value. Expected a value "
        f">= {minimum:g}, but got {value:g} instead.",
        param=param,
    )


def above_maximum(param: str, maximum: float, value: float) -> RequestError:
    return RequestError(
        f"Invalid '{param}': {_number_kind(value)} above maximum value. Expected a value "
        f"<= {maximum:g}, but got {value:g} instead.",
        param=param,
    )


def empty_array(param: str) -> RequestError:
    return RequestError(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got "
        "an empty array instead.",
        param=param,
    )


def array_too_long(param: str, limit: int, length: int) -> RequestError:
    return RequestError(
        f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, "
        f"but got an array with length {length} instead.",
        param=param,
    )


def empty_text(param: str) -> RequestError:
    return RequestError(empty_string(param), param=param)


def not_one_of(param: str, value: Any, allowed: Sequence[str]) -> RequestError:
    return RequestError(invalid_value(param, value, allowed), param=param)


def streaming_unsupported(endpoint: str) -> RequestError:
    """OpenAI's recorded batch wording, for a line that reaches a model with ``stream``."""
    api = ENDPOINT_API_NAMES.get(endpoint, endpoint)
    return RequestError(
        f"{api}: Streaming is not supported in the Batch API.",
        param="stream",
        code="streaming_unsupported",
    )


def only_text_content(param: str) -> RequestError:
    return RequestError(
        f"Invalid '{param}': only text content parts are supported by this model.",
        param=param,
    )


def dimensions_unsupported(model: str, dimensions: int, value: Any) -> RequestError:
    return RequestError(
        f"Invalid 'dimensions': the model {model} produces {dimensions}-dimensional "
        f"embeddings only, but got {echo(value)} instead.",
        param="dimensions",
    )


# --- the prompt, against the model ---------------------------------------------------------


def empty_prompt() -> RequestError:
    return RequestError("Invalid 'prompt': the prompt has no tokens.", param="prompt")


def token_out_of_vocabulary(vocabulary: int) -> RequestError:
    return RequestError(
        f"Invalid 'prompt': token ids must be below {vocabulary}, the model's vocabulary size.",
        param="prompt",
    )


def context_length_exceeded(context: int, tokens: int) -> RequestError:
    """OpenAI's code, and its message's wording with the prompt's token count."""
    return RequestError(
        f"This model's maximum context length is {context} tokens. However, your prompt "
        f"resulted in {tokens} tokens. Please reduce the length of the prompt.",
        code="context_length_exceeded",
    )


# --- the model and the endpoint -----------------------------------------------------------


def model_not_found(model: str) -> RequestError:
    """OpenAI's wording for a model it does not serve (404)."""
    return RequestError(
        f"The model '{echo(model)}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
        status_code=404,
    )


def no_upstream_for_model(model: str | None) -> RequestError:
    """No configured upstream lists the model and none is the default (404)."""
    return RequestError(
        f"The model '{echo(model)}' is not served by any configured upstream.",
        param="model",
        code="model_not_found",
        status_code=404,
    )


def endpoint_not_served(model: str, endpoint: str) -> RequestError:
    return RequestError(
        f"The model '{model}' does not serve {echo(endpoint)}.", param="url", code="invalid_url"
    )


def model_failed_on_request(detail: str) -> RequestError:
    """The model broke while serving the request (500, OpenAI's ``server_error`` type)."""
    return RequestError(
        f"The model failed while serving this request: {echo(detail, 500)}",
        param=None,
        code="internal_error",
        status_code=500,
    )
