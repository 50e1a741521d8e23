"""Attachments over HTTP: a streamed upload before the complaint exists, a streamed download
for those who may read the complaint (docs/attachments.md).

`POST /attachments?filename=...` takes the file as the raw request body, its media type in
`Content-Type` (no multipart: nothing to parse, the bytes go straight through the
encryption to the store, and any HTTP client can send a file as it is). The answer,
`{sha256, name, size, media_type}`, is what a complaint refers to: a registration's
attachment (`storage_ref: "sha256:<hex>"`, with `filename`, `content_type`, `size_bytes`)
or an attachment field's value as it is. The complaint's command then claims the file for
its customer (`Attachments.claim`, commands.sealed_blobs).

`GET /complaints/{id}/attachments/{sha256}` answers the file to whoever may read that
complaint (role and team, as `GET /complaints/{id}`), and only if the complaint refers to
it; the file name is given to roles that see personal data.
"""

# (No `from __future__ import annotations`: FastAPI must see the real types in the routes'
# signatures, the actor's among them.)
import re
from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from aggregates.access import PERSONAL_DATA, AccessDenied, Principal
from aggregates.complaint import ERASED
from aggregates.sealed_fields import SEALED
from commands.desk import ComplaintDesk
from commands.models import text_problem
from commands.sealed_blobs import (
    AttachmentErased,
    AttachmentNotStored,
    AttachmentTooLarge,
    MediaTypeRefused,
    SealedBlobs,
)

# Who may upload: whoever may put a file on a complaint (registering it, triaging it, or
# setting its fields).
UPLOADERS = ("register", "triage", "update_fields")
# After a refusal, what the client is still sending is read and dropped up to this much, so
# that it gets to read the 413 rather than a reset connection.
DRAIN_BYTES = 32 * 1024 * 1024
SHA256 = re.compile(r"[0-9a-f]{64}")
STORAGE_REF = "sha256:"


class UploadedAttachment(BaseModel):
    """A file on record, as a complaint refers to it (an attachment field's value)."""

    sha256: str = Field(description="SHA-256 of the content, hex: its address")
    name: str = Field(description="the file name given at upload")
    size: int = Field(description="bytes")
    media_type: str


def references(value: Any) -> dict[str, str | None]:
    """The files `value` (a command, an event's fields) refers to: SHA-256 -> file name.
    A registration's attachment names its file by `storage_ref`, an attachment field's
    value by `sha256`."""
    found: dict[str, str | None] = {}
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseModel):
            item = item.model_dump()
        if isinstance(item, dict):
            ref, name = item.get("storage_ref"), item.get("filename")
            if isinstance(item.get("sha256"), str):
                ref, name = STORAGE_REF + item["sha256"], item.get("name")
            if isinstance(ref, str) and ref.startswith(STORAGE_REF) and SHA256.fullmatch(ref[len(STORAGE_REF):]):
                found.setdefault(ref[len(STORAGE_REF):], name if isinstance(name, str) else None)
            stack += list(item.values())
        elif isinstance(item, (list, tuple)):
            stack += list(item)
    return found


class Attachments:
    def __init__(self, blobs: SealedBlobs, desk: ComplaintDesk) -> None:
        self.blobs = blobs
        self.desk = desk

    def claim(self, complaint_id: UUID, command: Any) -> None:
        """After a command on the complaint was stored: the files it refers to become its
        customer's (their keys wrapped under the customer's data key)."""
        if not (getattr(command, "attachments", None) or getattr(command, "fields", None)):
            return  # most commands refer to no file: nothing to walk
        referred = references(command)
        if referred:
            self.blobs.claim(complaint_id, referred)

    def referred_by(self, complaint_id: UUID) -> dict[str, str | None]:
        """Every file the complaint ever referred to (its history: a replaced field value
        too), with the names as its events hold them (opened, or `[erased]`)."""
        found: dict[str, str | None] = {}
        for event in self.desk.repository.event_store.get(complaint_id):
            found |= references({name: value for name, value in vars(event).items()
                                 if name in ("attachments", "changes", "fields")})
        return found

    def router(self, actor_type: Any) -> APIRouter:
        router = APIRouter(tags=["attachments"])
        blobs = self.blobs

        @router.post(
            "/attachments",
            status_code=status.HTTP_201_CREATED,
            response_model=UploadedAttachment,
            summary="Upload a file (the raw body, its media type in Content-Type) to attach to a complaint",
            responses={
                401: {"description": "no valid bearer token"},
                403: {"description": "the role may not put files on complaints"},
                413: {"description": "larger than COMPLAINTS_ATTACHMENT_MAX_BYTES"},
                415: {"description": "a media type not in COMPLAINTS_ATTACHMENT_MEDIA_TYPES"},
            },
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "*/*": {"schema": {"type": "string", "format": "binary"}}}}},
        )
        async def upload(
            request: Request,
            actor: actor_type,  # type: ignore[valid-type]
            filename: Annotated[str, Query(min_length=1, max_length=200,
                                           description="the file's name, as the customer gave it")],
        ) -> Any:
            if not any(actor.may(permission) for permission in UPLOADERS):
                raise AccessDenied(f"{actor.subject} may not upload attachments (it takes one of: {', '.join(UPLOADERS)})")
            if problem := text_problem(filename):
                return JSONResponse({"detail": [{"loc": ["query", "filename"], "msg": problem,
                                                 "type": "string_invalid"}]}, status_code=422)
            try:
                media_type = blobs.accepted_media_type(request.headers.get("content-type"))
            except MediaTypeRefused as refused:
                return JSONResponse({"detail": str(refused), "type": "media_type_not_accepted",
                                     "media_type": refused.media_type, "accepted": list(blobs.media_types)},
                                    status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
            declared = request.headers.get("content-length", "")
            stream = request.stream()
            try:
                if declared.isdigit() and int(declared) > blobs.max_bytes:
                    raise AttachmentTooLarge(blobs.max_bytes)
                with blobs.receiving(media_type) as receiving:
                    async for chunk in stream:
                        receiving.write(chunk)
            except AttachmentTooLarge as large:
                await _drain(stream, declared)
                return JSONResponse({"detail": str(large), "type": "attachment_too_large", "limit": large.limit},
                                    status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                                    headers={"connection": "close"})
            stored = receiving.stored
            assert stored is not None  # received whole
            return UploadedAttachment(sha256=stored.sha256, name=filename, size=stored.size,
                                      media_type=stored.media_type)

        @router.get(
            "/complaints/{complaint_id}/attachments/{sha256}",
            response_class=StreamingResponse,
            summary="Download a file a complaint refers to",
            responses={
                200: {"content": {"application/octet-stream": {}}, "description": "the file, streamed"},
                401: {"description": "no valid bearer token"},
                403: {"description": "not allowed for the role or team"},
                404: {"description": "no such complaint, or it does not refer to this file"},
                410: {"description": "the customer's personal data was erased: the file no longer opens"},
            },
        )
        def download(
            complaint_id: UUID,
            sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$", description="the file's SHA-256, hex")],
            actor: actor_type,  # type: ignore[valid-type]
        ) -> Any:
            self.desk.complaint_for(actor, complaint_id)  # role and team (403), 404; a view of personal data logged
            referred = self.referred_by(complaint_id)
            if sha256 not in referred:
                return _not_found(complaint_id, sha256, "does not refer to")
            try:
                stored, chunks = blobs.opened(complaint_id, sha256)
            except AttachmentErased:
                return JSONResponse({"detail": f"the personal data of complaint {complaint_id}'s customer was erased:"
                                               " its attachments no longer open", "type": "attachment_erased",
                                     "complaint_id": str(complaint_id), "sha256": sha256},
                                    status_code=status.HTTP_410_GONE)
            except AttachmentNotStored:
                return _not_found(complaint_id, sha256, "refers to, but this server does not hold,")
            name = _shown_name(referred[sha256], sha256, actor)
            return StreamingResponse(chunks, media_type=stored.media_type, headers={
                "content-length": str(stored.size),
                "content-disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
                "x-content-type-options": "nosniff",
                "cache-control": "private, no-store",
            })

        return router


def _shown_name(name: str | None, sha256: str, actor: Principal) -> str:
    """The file's name for roles that see personal data; its address for the others."""
    if name and name not in (SEALED, ERASED) and actor.may(PERSONAL_DATA):
        return name
    return f"attachment-{sha256[:12]}"


def _not_found(complaint_id: UUID, sha256: str, what: str) -> JSONResponse:
    return JSONResponse({"detail": f"complaint {complaint_id} {what} a file with SHA-256 {sha256}",
                         "type": "attachment_not_found", "complaint_id": str(complaint_id), "sha256": sha256},
                        status_code=status.HTTP_404_NOT_FOUND)


async def _drain(stream: Any, declared: str) -> None:
    """Read what the client is still sending and drop it, up to DRAIN_BYTES."""
    if declared.isdigit() and int(declared) > DRAIN_BYTES:
        return
    drained = 0
    try:
        async for chunk in stream:
            drained += len(chunk)
            if drained > DRAIN_BYTES:
                return
    except ClientDisconnect:  # nothing more to drop
        return
