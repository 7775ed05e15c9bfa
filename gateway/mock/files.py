"""The Files API, as far as the Batch API needs it (both modes): uploads kept in memory.

``POST /v1/files`` (multipart: ``purpose``, ``file``), ``GET /v1/files`` (``purpose``,
``limit``, ``after``, ``order``), ``GET``/``DELETE /v1/files/{id}``, ``GET
/v1/files/{id}/content``. At most ``FILES_LIMIT`` files are kept (the oldest dropped) and
``max_bytes`` in all, a batch's output and error files included: an upload that would pass it
is a 413, as an organisation over its storage quota gets. Batch files expire 30 days after
their creation (``expires_at``), as OpenAI's do by default; the mock does not drop them then.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import BodyPartReader, web

from gateway.mock import send, stored
from gateway.mock.shapes import JSON, MockError
from gateway.mock.stats import MockStats

FILES_LIMIT = 10_000
FILES_MAX_BYTES = 256 * 1024 * 1024
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_FILE_TTL_S = 30 * 86_400
_EXPIRING = ("batch", "batch_output")
_LIST_PAGE = (10_000, 10_000)  # default and largest ``limit``, as OpenAI's
_CHUNK = 64 * 1024
_ROUTE = "/files"


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    content: bytes

    def body(self) -> JSON:
        expires = self.created_at + BATCH_FILE_TTL_S if self.purpose in _EXPIRING else None
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": expires,
            "status_details": None,
        }


class FileStore:
    """The kept files, oldest first, and the bytes they hold."""

    def __init__(self, max_bytes: int = FILES_MAX_BYTES, limit: int = FILES_LIMIT) -> None:
        self._max_bytes = max_bytes
        self._limit = limit
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._bytes = 0
        self._ids = itertools.count(1)

    @property
    def room(self) -> int:
        """Bytes an upload may still take."""
        return max(self._max_bytes - self._bytes, 0)

    def add(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        """Keep a file; the caller has checked ``room`` for an upload (a batch's output is
        written whatever room is left, as the real service writes it)."""
        kept = StoredFile(f"file-mock{next(self._ids):014d}", filename, purpose,
                          int(time.time()), content)
        self._files[kept.id] = kept
        self._bytes += len(content)
        while len(self._files) > self._limit:
            _, dropped = self._files.popitem(last=False)
            self._bytes -= len(dropped.content)
        return kept

    def get(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def pop(self, file_id: str) -> StoredFile | None:
        dropped = self._files.pop(file_id, None)
        if dropped is not None:
            self._bytes -= len(dropped.content)
        return dropped

    def listed(self, purpose: str | None) -> list[StoredFile]:
        return [f for f in self._files.values() if purpose is None or f.purpose == purpose]


class FileRoutes:
    """The Files API's routes; every one checks the key."""

    def __init__(
        self, files: FileStore, check_key: Callable[[web.Request], None], stats: MockStats
    ) -> None:
        self._files = files
        self._check_key = check_key
        self._stats = stats

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/files", self.upload),
            web.get("/v1/files", self.listing, allow_head=False),
            web.get("/v1/files/{id}", self.retrieve, allow_head=False),
            web.delete("/v1/files/{id}", self.delete),
            web.get("/v1/files/{id}/content", self.content, allow_head=False),
        ]

    async def upload(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_key(request)
            purpose, filename, content = await _read_upload(request, self._files.room)
        except MockError as exc:
            return self._refuse(exc)
        return self._json(self._files.add(filename, purpose, content).body())

    async def listing(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_key(request)
            bodies = [f.body() for f in self._files.listed(request.query.get("purpose"))]
            page = stored.page(bodies, request.query, _LIST_PAGE)
        except MockError as exc:
            return self._refuse(exc)
        return self._json(page)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        try:
            found = self._find(request)
        except MockError as exc:
            return self._refuse(exc)
        return self._json(found.body())

    async def delete(self, request: web.Request) -> web.StreamResponse:
        try:
            found = self._find(request)
        except MockError as exc:
            return self._refuse(exc)
        self._files.pop(found.id)
        return self._json({"id": found.id, "object": "file", "deleted": True})

    async def content(self, request: web.Request) -> web.StreamResponse:
        try:
            found = self._find(request)
        except MockError as exc:
            return self._refuse(exc)
        self._stats.requests[_ROUTE] += 1
        return web.Response(body=found.content, content_type="application/octet-stream")

    def _find(self, request: web.Request) -> StoredFile:
        self._check_key(request)
        file_id = request.match_info["id"]
        found = self._files.get(file_id)
        if found is None:
            raise MockError(404, f"No such File object: {file_id}", param="id")
        return found

    def _json(self, body: JSON) -> web.Response:
        self._stats.requests[_ROUTE] += 1
        return send.json_response(orjson.dumps(body))

    def _refuse(self, exc: MockError) -> web.Response:
        self._stats.errors[_ROUTE] += 1
        return send.error_response(exc)


async def _read_upload(request: web.Request, room: int) -> tuple[str, str, bytes]:
    """(purpose, filename, content) of a multipart upload; a 413 past ``room`` bytes."""
    if not request.content_type.startswith("multipart/"):
        raise MockError(400, "The request must be multipart/form-data with 'purpose' and 'file'.")
    purpose: str | None = None
    upload: tuple[str, bytes] | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            upload = (part.filename or "upload", await _read_file(part, room))
    if upload is None:
        raise MockError(400, "Missing required parameter: 'file'.", param="file",
                        code="missing_required_parameter")
    if purpose not in PURPOSES:
        raise MockError(400, f"Invalid value for 'purpose': {purpose!r}; expected one of "
                        f"{', '.join(PURPOSES)}.", param="purpose")
    return purpose, *upload


async def _read_file(part: BodyPartReader, room: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > room:
            raise MockError(
                413, f"mock upstream: the files kept would pass their {room:,} bytes of room; "
                "delete some files first.", param="file", code="file_storage_limit_exceeded",
            )
        chunks.append(chunk)
    return b"".join(chunks)
