"""The embedded models' refusals of a request body, through the parsing they run
(actors/local/requests.py: pure functions, no model needed), each checked whole
against the wording written here (docs/errors.md, "An executor's own refusal").
tests/models/test_local_models.py sends some of the same bodies through a real replica;
the refusals that need a model (context window, vocabulary) are checked there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from actors.local.requests import (
    CHAT_MODEL_ID,
    COMPLETIONS_ENDPOINT,
    EMBEDDINGS_ENDPOINT,
    MAX_EMBEDDING_INPUTS,
    RequestError,
    _json_body,
    chat_messages,
    completion_prompts,
    embedding_inputs,
    endpoint_error,
    sampling_params,
)

Parse = Callable[[dict[str, Any]], object]


def chat(body: dict[str, Any]) -> object:
    return chat_messages(body)


def sampling(body: dict[str, Any]) -> object:
    return sampling_params(body, None)


def completions_sampling(body: dict[str, Any]) -> object:
    return sampling_params(body, 16, endpoint=COMPLETIONS_ENDPOINT)


def item(body: dict[str, Any]) -> object:
    return _json_body(body["item"])


USER = {"role": "user", "content": "hi"}

# (parse, body, status, code, param, message)
CASES: dict[str, tuple[Parse, dict[str, Any], int, str, str | None, str]] = {
    "messages missing": (
        chat,
        {},
        400,
        "missing_required_parameter",
        "messages",
        "Missing required parameter: 'messages'.",
    ),
    "messages not an array": (
        chat,
        {"messages": "hi"},
        400,
        "invalid_request",
        "messages",
        "Invalid type for 'messages': expected an array, but got a string instead.",
    ),
    "messages empty": (
        chat,
        {"messages": []},
        400,
        "invalid_request",
        "messages",
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
        "an empty array instead.",
    ),
    "message not an object": (
        chat,
        {"messages": ["hi"]},
        400,
        "invalid_request",
        "messages[0]",
        "Invalid type for 'messages[0]': expected an object, but got a string instead.",
    ),
    "unknown role": (
        chat,
        {"messages": [{"role": "robot", "content": "x"}]},
        400,
        "invalid_request",
        "messages[0].role",
        "Invalid messages[0].role: robot. Supported values: 'assistant', 'developer', "
        "'function', 'system', 'tool', and 'user'.",
    ),
    "image part": (
        chat,
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "invalid_request",
        "messages[0].content[0]",
        "Invalid 'messages[0].content[0]': only text content parts are supported by this model.",
    ),
    "text part not a string": (
        chat,
        {"messages": [USER, {"role": "user", "content": [{"type": "text", "text": 3}]}]},
        400,
        "invalid_request",
        "messages[1].content[0].text",
        "Invalid type for 'messages[1].content[0].text': expected a string, but got an "
        "integer instead.",
    ),
    "content of another type": (
        chat,
        {"messages": [{"role": "user", "content": {"text": "x"}}]},
        400,
        "invalid_request",
        "messages[0].content",
        "Invalid type for 'messages[0].content': expected a string or an array of content "
        "parts, but got an object instead.",
    ),
    "stream on chat": (
        sampling,
        {"stream": True},
        400,
        "streaming_unsupported",
        "stream",
        "Chat Completions: Streaming is not supported in the Batch API.",
    ),
    "stream on completions": (
        completions_sampling,
        {"stream": True},
        400,
        "streaming_unsupported",
        "stream",
        "Completions: Streaming is not supported in the Batch API.",
    ),
    "max_tokens a boolean": (
        sampling,
        {"max_tokens": True},
        400,
        "invalid_request",
        "max_tokens",
        "Invalid type for 'max_tokens': expected an integer, but got a boolean instead.",
    ),
    "max_tokens zero": (
        sampling,
        {"max_tokens": 0},
        400,
        "invalid_request",
        "max_tokens",
        "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 "
        "instead.",
    ),
    "seed not an integer": (
        sampling,
        {"seed": 1.5},
        400,
        "invalid_request",
        "seed",
        "Invalid type for 'seed': expected an integer, but got a number instead.",
    ),
    "temperature a string": (
        sampling,
        {"temperature": "hot"},
        400,
        "invalid_request",
        "temperature",
        "Invalid type for 'temperature': expected a number, but got a string instead.",
    ),
    "temperature too high": (
        sampling,
        {"temperature": 2.5},
        400,
        "invalid_request",
        "temperature",
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got "
        "2.5 instead.",
    ),
    "presence_penalty too low": (
        sampling,
        {"presence_penalty": -3},
        400,
        "invalid_request",
        "presence_penalty",
        "Invalid 'presence_penalty': integer below minimum value. Expected a value >= -2, "
        "but got -3 instead.",
    ),
    "five stops": (
        sampling,
        {"stop": ["a", "b", "c", "d", "e"]},
        400,
        "invalid_request",
        "stop",
        "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an "
        "array with length 5 instead.",
    ),
    "stop of numbers": (
        sampling,
        {"stop": [1, 2]},
        400,
        "invalid_request",
        "stop",
        "Invalid type for 'stop': expected a string or an array of strings, but got an array "
        "instead.",
    ),
    "prompt missing": (
        completion_prompts,
        {},
        400,
        "missing_required_parameter",
        "prompt",
        "Missing required parameter: 'prompt'.",
    ),
    "prompt of objects": (
        completion_prompts,
        {"prompt": [{"text": "x"}]},
        400,
        "invalid_request",
        "prompt",
        "Invalid type for 'prompt': expected a string, an array of strings, or an array of "
        "token ids, but got an array instead.",
    ),
    "input missing": (
        embedding_inputs,
        {},
        400,
        "missing_required_parameter",
        "input",
        "Missing required parameter: 'input'.",
    ),
    "input of token ids": (
        embedding_inputs,
        {"input": [1, 2, 3]},
        400,
        "invalid_request",
        "input",
        "Invalid type for 'input': expected a string or an array of strings, but got an "
        "array instead.",
    ),
    "input empty": (
        embedding_inputs,
        {"input": []},
        400,
        "invalid_request",
        "input",
        "Invalid 'input': empty array. Expected an array with minimum length 1, but got an "
        "empty array instead.",
    ),
    "too many inputs": (
        embedding_inputs,
        {"input": ["x"] * (MAX_EMBEDDING_INPUTS + 1)},
        400,
        "invalid_request",
        "input",
        f"Invalid 'input': array too long. Expected an array with maximum length "
        f"{MAX_EMBEDDING_INPUTS}, but got an array with length {MAX_EMBEDDING_INPUTS + 1} "
        "instead.",
    ),
    "an empty input": (
        embedding_inputs,
        {"input": ["x", ""]},
        400,
        "invalid_request",
        "input[1]",
        "Invalid 'input[1]': empty string. Expected a string with minimum length 1, but got "
        "an empty string instead.",
    ),
    "encoding_format unknown": (
        embedding_inputs,
        {"input": "x", "encoding_format": "int8"},
        400,
        "invalid_request",
        "encoding_format",
        "Invalid encoding_format: int8. Supported values: 'float' and 'base64'.",
    ),
    "dimensions other than the model's": (
        embedding_inputs,
        {"input": "x", "dimensions": 128},
        400,
        "invalid_request",
        "dimensions",
        "Invalid 'dimensions': the model all-minilm-l6-v2 produces 384-dimensional "
        "embeddings only, but got 128 instead.",
    ),
    "body not an object": (
        item,
        {"item": {"line": 1, "custom_id": "a", "body": ["messages"]}},
        400,
        "invalid_request",
        "body",
        "Invalid type for 'body': expected an object, but got an array instead.",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_refusal(name: str) -> None:
    parse, body, status, code, param, message = CASES[name]
    with pytest.raises(RequestError) as caught:
        parse(body)
    err = caught.value
    assert err.status_code == status
    assert err.body() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def test_endpoint_the_model_does_not_serve() -> None:
    err = endpoint_error(CHAT_MODEL_ID, EMBEDDINGS_ENDPOINT)
    assert (err.status_code, err.body()) == (
        400,
        {
            "error": {
                "message": "The model 'smollm2-135m-instruct' does not serve /v1/embeddings.",
                "type": "invalid_request_error",
                "param": "url",
                "code": "invalid_url",
            }
        },
    )


def test_good_bodies_pass() -> None:
    """The refusals above are not everything refused: valid bodies go through."""
    assert chat_messages({"messages": [USER]}) == [{"role": "user", "content": "hi"}]
    assert sampling_params({"temperature": 2, "stop": ["a"] * 4}, None)["temperature"] == 2.0
    assert completion_prompts({"prompt": [1, 2]}) == [[1, 2]]
    assert embedding_inputs({"input": "x", "dimensions": 384}) == ["x"]
