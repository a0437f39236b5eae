"""Pydantic models for every object on the wire (see reference/openai-batch-api.md).

These are the contract with the ``openai`` SDK: field names and nullability follow
OpenAI exactly. Optional fields default to None and are still dumped, because the
SDK and other clients expect them present as null.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from batches.domain.messages import too_many_metadata_pairs

SUPPORTED_ENDPOINTS: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/moderations",
)
Endpoint = Literal[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/moderations",
]
BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
COMPLETION_WINDOWS: dict[str, int] = {"24h": 86_400}
"""Accepted completion windows and their length in seconds (OpenAI accepts only 24h)."""
CREATE_CHOICES: dict[str, tuple[str, ...]] = {
    "endpoint": SUPPORTED_ENDPOINTS,
    "completion_window": tuple(COMPLETION_WINDOWS),
    "output_expires_after.anchor": ("created_at",),
}
"""The supported values named when a create parameter has another one."""

MIN_EXPIRES_SECONDS = 3_600
MAX_EXPIRES_SECONDS = 2_592_000
MAX_METADATA_PAIRS = 16
MAX_IDEMPOTENCY_KEY_CHARS = 255


class BatchError(BaseModel):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class Batch(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: int
    model: str | None = None
    errors: BatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts | None = Field(default_factory=RequestCounts)
    usage: Usage | None = Field(default_factory=Usage)
    metadata: dict[str, str] | None = None


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class OutputExpiresAfter(BaseModel):
    anchor: Literal["created_at"]
    seconds: int = Field(ge=MIN_EXPIRES_SECONDS, le=MAX_EXPIRES_SECONDS)


MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_CHARS)
]


class CreateBatchRequest(BaseModel):
    """The body of ``POST /v1/batches``.

    ``idempotency_key`` and its older spelling ``idem_tok`` are kept apart on purpose:
    the caller resolves them with the header and refuses two different keys.
    Unknown fields are ignored, as OpenAI's SDK may send newer ones.
    """

    model_config = ConfigDict(extra="ignore")

    input_file_id: Annotated[str, StringConstraints(min_length=1)]
    endpoint: Endpoint
    completion_window: Literal["24h"]
    metadata: dict[MetadataKey, MetadataValue] | None = None
    output_expires_after: OutputExpiresAfter | None = None
    idempotency_key: IdempotencyKey | None = None
    idem_tok: IdempotencyKey | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_pairs(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # A field validator (not Field(max_length)) so the message names the rule.
        if value is not None and len(value) > MAX_METADATA_PAIRS:
            raise ValueError(too_many_metadata_pairs(MAX_METADATA_PAIRS, len(value)))
        return value
