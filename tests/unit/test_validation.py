from __future__ import annotations

from typing import Any

import orjson
import pytest

from batches.domain.validation import ValidationLimits, iter_requests, validate_input

EP = "/v1/chat/completions"


def req(custom_id: str = "a", **over: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": EP,
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    line.update(over)
    return line


def jsonl(*objs: Any) -> list[bytes]:
    return [o if isinstance(o, bytes) else orjson.dumps(o) + b"\n" for o in objs]


def known(model: str) -> bool:
    return model in ("m", "other")


def only_error(lines: list[bytes], **kw: Any) -> dict[str, Any]:
    report = validate_input(lines, EP, known, **kw)
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


def test_valid_file() -> None:
    report = validate_input(jsonl(req("a"), b"\n", req("b")), EP, known)
    assert report.ok and report.errors == []
    assert (report.model, report.total) == ("m", 2)


@pytest.mark.parametrize(
    ("bad", "code", "param"),
    [
        (b"{not json\n", "invalid_json_line", None),
        (b"\xff\xfe{}\n", "invalid_json_line", None),
        (b"[1, 2]\n", "invalid_json_line", None),
        (
            {k: v for k, v in req("x").items() if k != "custom_id"},
            "missing_required_parameter",
            "custom_id",
        ),
        (
            {k: v for k, v in req("x").items() if k != "method"},
            "missing_required_parameter",
            "method",
        ),
        ({k: v for k, v in req("x").items() if k != "url"}, "missing_required_parameter", "url"),
        ({k: v for k, v in req("x").items() if k != "body"}, "missing_required_parameter", "body"),
        (req(7), "invalid_request", "custom_id"),  # type: ignore[arg-type]
        (req("x", method="GET"), "invalid_request", "method"),
        (req("x", url=5), "invalid_request", "url"),
        (req("x", body="text"), "invalid_request", "body"),
        (req("x", body={"messages": []}), "invalid_request", "body.model"),
        (req("x", url="/v1/embeddings"), "invalid_url", "url"),
        (req("x", body={"model": "m", "stream": True}), "streaming_unsupported", "body.stream"),
        (req("a"), "duplicate_custom_id", "custom_id"),
        (req("x", body={"model": "other", "messages": []}), "mismatched_model", "body.model"),
        (req("x", body={"model": "m"}), "invalid_request", "body.messages"),
        (req("x", body={"model": "m", "messages": "hi"}), "invalid_request", "body.messages"),
        (req("x", body={"model": 3, "messages": []}), "invalid_request", "body.model"),
        (req("x" * 513), "invalid_request", "custom_id"),
    ],
)
def test_each_error_code_names_its_line(bad: Any, code: str, param: str | None) -> None:
    # line 1 valid, line 2 blank (still numbered), line 3 the bad one, line 4 valid
    lines = jsonl(req("a"), b"   \n", bad, req("z"))
    error = only_error(lines)
    assert (error["code"], error["line"], error["param"]) == (code, 3, param)
    assert error["message"]


def test_model_not_found_reported_once() -> None:
    nope = {"model": "nope", "messages": []}
    lines = jsonl(req("a", body=nope), req("b", body=nope))
    error = only_error(lines)
    assert (error["code"], error["line"], error["param"]) == ("model_not_found", 1, "body.model")


def test_model_known_asked_once_per_model() -> None:
    asked: list[str] = []

    def spy(model: str) -> bool:
        asked.append(model)
        return True

    validate_input(jsonl(*(req(str(i)) for i in range(50))), EP, spy)
    assert asked == ["m"]


def test_empty_file() -> None:
    for lines in ([], [b"\n", b"  \n"]):
        error = only_error(lines)
        assert (error["code"], error["line"]) == ("empty_file", None)


def test_too_many_requests() -> None:
    lines = jsonl(req("a"), b"\n", req("b"), req("c"))
    error = only_error(lines, limits=ValidationLimits(max_requests=2))
    assert (error["code"], error["line"]) == ("too_many_requests", 4)


def test_file_too_large() -> None:
    lines = jsonl(req("a"), req("b"), req("c"))
    limit = len(lines[0]) + len(lines[1]) + 1
    error = only_error(lines, limits=ValidationLimits(max_bytes=limit))
    assert (error["code"], error["line"]) == ("file_too_large", 3)


def test_line_too_large() -> None:
    lines = jsonl(req("a"), req("b", body={"model": "m", "pad": "x" * 100}))
    error = only_error(lines, limits=ValidationLimits(max_line_bytes=len(lines[0]) + 5))
    assert (error["code"], error["line"]) == ("line_too_large", 2)


def test_several_errors_each_with_its_line_and_cap() -> None:
    lines = jsonl(b"nope\n", req("a"), req("a"), req("b", url="/v1/x"))
    report = validate_input(lines, EP, known)
    assert [(e["code"], e["line"]) for e in report.errors] == [
        ("invalid_json_line", 1),
        ("duplicate_custom_id", 3),
        ("invalid_url", 4),
    ]
    capped = validate_input(jsonl(*(b"x\n" for _ in range(500))), EP, known, max_errors=10)
    assert len(capped.errors) == 10


def test_consumes_lines_lazily() -> None:
    consumed = 0

    def gen() -> Any:
        nonlocal consumed
        for i in range(1_000):
            consumed += 1
            yield b"bad\n" if i < 5 else orjson.dumps(req(str(i))) + b"\n"

    report = validate_input(gen(), EP, known, max_errors=5)
    assert len(report.errors) == 5 and consumed == 5  # stopped early, never listed the file


def test_iter_requests_skips_blanks_keeps_numbers() -> None:
    lines = jsonl(req("a"), b"\n", req("b"))
    assert [(n, r["custom_id"]) for n, r in iter_requests(lines)] == [(1, "a"), (3, "b")]


# --- per-endpoint bodies, OpenAI's recorded messages, every bad line --------------------

BODIES = {
    "/v1/chat/completions": ("messages", [{"role": "user", "content": "hi"}], "Messages"),
    "/v1/completions": ("prompt", "Say hi", "Prompt"),
    "/v1/embeddings": ("input", ["a", "b"], "Input"),
    "/v1/responses": ("input", "hi", "Input"),
    "/v1/moderations": ("input", "hi", "Input"),
}


@pytest.mark.parametrize("endpoint", sorted(BODIES))
def test_each_endpoint_requires_its_field_with_its_type(endpoint: str) -> None:
    field, good, word = BODIES[endpoint]

    def line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}

    lines = jsonl(
        line("ok", {"model": "m", field: good}),
        line("missing", {"model": "m", "max_tokens": 10}),
        line("wrong", {"model": "m", field: {"not": "right"}}),
        line("null", {"model": "m", field: None}),
    )
    report = validate_input(lines, endpoint, known)
    assert [(e["line"], e["code"], e["param"]) for e in report.errors] == [
        (2, "invalid_request", f"body.{field}"),
        (3, "invalid_request", f"body.{field}"),
        (4, "invalid_request", f"body.{field}"),
    ]
    assert report.errors[0]["message"] == f"{word} parameter is required."
    assert report.errors[1]["message"].startswith(f"Invalid type for 'body.{field}': expected")
    assert report.errors[1]["message"].endswith("but got an object instead.")


def test_openai_recorded_line_errors() -> None:
    """The llama-stack/OGX suite's recordings of OpenAI, message for message."""
    lines = jsonl(
        req("a", body={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}),
        req("b", body={"model": "m", "max_tokens": 10}),
        req("c", body={"model": "m", "messages": [], "stream": True}),
        req("d", url="/v1/embeddings"),
        b"{invalid json here\n",
        {k: v for k, v in req("e").items() if k != "custom_id"},
        req("a"),
    )
    report = validate_input(lines, EP, known)
    assert [(e["line"], e["code"], e["param"], e["message"]) for e in report.errors] == [
        (1, "invalid_request", "body.model", "Model parameter is required."),
        (2, "invalid_request", "body.messages", "Messages parameter is required."),
        (
            3,
            "streaming_unsupported",
            "body.stream",
            "Chat Completions: Streaming is not supported in the Batch API.",
        ),
        (
            4,
            "invalid_url",
            "url",
            "The URL provided for this request does not match the batch endpoint.",
        ),
        (5, "invalid_json_line", None, "This line is not parseable as valid JSON."),
        (
            6,
            "missing_required_parameter",
            "custom_id",
            "Missing required parameter: 'custom_id'.",
        ),
        (
            7,
            "duplicate_custom_id",
            "custom_id",
            "The custom_id 'a' is used more than once in this file.",
        ),
    ]


def test_unknown_model_message_is_openais() -> None:
    error = only_error(jsonl(req("a", body={"model": "nonexistent-model-xyz", "messages": []})))
    assert error == {
        "code": "model_not_found",
        "line": 1,
        "param": "body.model",
        "message": "The provided model 'nonexistent-model-xyz' is not supported by the Batch API.",
    }


@pytest.mark.parametrize(
    ("endpoint", "api"),
    [
        ("/v1/chat/completions", "Chat Completions"),
        ("/v1/completions", "Completions"),
        ("/v1/embeddings", "Embeddings"),
        ("/v1/responses", "Responses"),
        ("/v1/moderations", "Moderations"),
    ],
)
def test_streaming_names_the_endpoints_api(endpoint: str, api: str) -> None:
    field = BODIES[endpoint][0]
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": endpoint,
        "body": {"model": "m", field: BODIES[endpoint][1], "stream": True},
    }
    error = (
        only_error(jsonl(line))
        if endpoint == EP
        else validate_input(jsonl(line), endpoint, known).errors[0]
    )
    assert error["message"] == f"{api}: Streaming is not supported in the Batch API."


# --- issue 10 item 3: user strings echoed in errors are bounded --------------------------


def test_echoed_values_are_cut_and_custom_id_capped() -> None:
    huge = "x" * 100_000
    lines = jsonl(
        req(huge),  # over the custom_id cap: refused, not echoed
        req("a", body={"model": huge, "messages": []}),
        req("b"),  # another model than line 2's: both are quoted, both cut
    )
    report = validate_input(lines, EP, lambda m: m == "m")
    codes = [e["code"] for e in report.errors]
    assert codes == ["invalid_request", "model_not_found", "mismatched_model"]
    assert "length 100000" in report.errors[0]["message"]
    assert all(len(e["message"]) < 200 for e in report.errors)


def test_total_size_of_errors_is_bounded() -> None:
    # 101 lines sharing one long (but allowed) custom_id: every line after the first is a
    # duplicate; the report stays small whatever the file holds.
    cid = "c" * 512
    lines = jsonl(*(req(cid) for _ in range(101)))
    report = validate_input(lines, EP, known)
    assert 1 <= len(report.errors) <= 100
    assert sum(len(orjson.dumps(e)) for e in report.errors) < 64 * 1024
