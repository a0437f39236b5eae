"""multipart/form-data, streamed: the file part goes into the durable writer as its
bytes arrive, so the size limit is enforced while the upload is still coming in and
nothing is spooled or held in memory first (starlette's form parser spools the whole
upload before the route runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from batches.domain import refusals
from batches.filestore import DurableWriter, FileTooLarge

MAX_FIELD_BYTES = 64 * 1024  # a form field (purpose, expires_after[...]) is small
MAX_PARTS = 16
FLUSH_BYTES = 1 << 20  # hand the writer a MiB at a time, off the event loop


@dataclass
class UploadForm:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    writer: DurableWriter | None = None


class _Parts:
    """The parser's callbacks: headers per part, small fields kept, file bytes queued."""

    def __init__(self, open_writer: Callable[[], DurableWriter]) -> None:
        self.form = UploadForm()
        self.open_writer = open_writer
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.file_bytes = 0
        self.parts = 0
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._data = bytearray()

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise refusals.too_many_form_fields(MAX_PARTS)
        self._headers, self._data, self._is_file = {}, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field, self._value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition"))
        self._name = params.get(b"name", b"").decode("utf-8", errors="replace")
        self._is_file = b"filename" in params
        if self._is_file:
            if self._name != "file" or self.form.writer is not None:
                raise refusals.one_file_field()
            self.form.filename = params[b"filename"].decode("utf-8", errors="replace")
            self.form.writer = self.open_writer()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.pending.append(data[start:end])
            self.pending_bytes += end - start
            self.file_bytes += end - start
            limit = self.form.writer.max_bytes if self.form.writer else None
            if limit is not None and self.file_bytes > limit:
                raise FileTooLarge(limit)  # now, not when the buffer is next written
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise refusals.form_field_too_large(self._name, MAX_FIELD_BYTES)

    def on_part_end(self) -> None:
        if not self._is_file:
            self.form.fields[self._name] = self._data.decode("utf-8", errors="replace")

    def take(self) -> bytes:
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        return data


async def receive_upload(request: Request, open_writer: Callable[[], DurableWriter]) -> UploadForm:
    """Parse the body; the file's bytes are durable (committed) when this returns.
    On any error the half-written file is removed."""
    _, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if not boundary:
        raise refusals.multipart_no_boundary()
    parts = _Parts(open_writer)
    callbacks = {name: getattr(parts, name) for name in dir(parts) if name.startswith("on_")}
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if parts.pending_bytes >= FLUSH_BYTES and parts.form.writer is not None:
                await asyncio.to_thread(parts.form.writer.write, parts.take())
        parser.finalize()
        writer = parts.form.writer
        if writer is not None:
            await asyncio.to_thread(writer.write, parts.take())
            await asyncio.to_thread(writer.commit)
    except BaseException as exc:
        if parts.form.writer is not None:
            parts.form.writer.abort()
        if isinstance(exc, MultipartParseError):
            raise refusals.multipart_malformed() from exc
        raise
    return parts.form
