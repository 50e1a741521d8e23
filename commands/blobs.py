"""Where attachments' bytes are kept: a directory (the embedded default), or a bucket of an
S3-compatible object store (when configured; `boto3` is imported only then).

A store keeps named objects and nothing else: what the names mean (content addresses) and
what the bytes are (ciphertext) is `commands.sealed_blobs`'s business. An object is written
whole or not at all: `writing()` hands out a local file to fill, and the object appears
under the name given to `Incoming.keep_as` only when the block ends without an error; a
failed or refused upload leaves nothing behind, in the directory or in the bucket.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

# Files left in the directory's `.incoming/` by a process that died while receiving are
# removed by the next process opening the store, once they are this old (a younger one
# may be another process's upload in progress).
STALE_INCOMING_SECONDS = 3600.0


class BlobMissing(LookupError):
    """No object of that name."""


class Incoming:
    """An object being written: fill `file`, then name it with `keep_as` (or don't, to drop it)."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self.file = file
        self.path = path
        self.name: str | None = None

    def keep_as(self, name: str) -> None:
        self.name = name


class BlobStore(Protocol):
    def writing(self) -> Any: ...  # a context manager of an Incoming
    def reading(self, name: str) -> Any: ...  # a context manager of a readable binary file
    def put(self, name: str, data: bytes) -> None: ...
    def get(self, name: str) -> bytes: ...
    def names(self, prefix: str) -> list[str]: ...
    def delete(self, name: str) -> None: ...


class DirectoryBlobs:
    """Objects as files under `root` (names are relative paths); written through
    `root/.incoming` and renamed into place, so a reader never sees half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._incoming = root / ".incoming"
        self._incoming.mkdir(parents=True, exist_ok=True)
        for left in self._incoming.iterdir():
            if time.time() - left.stat().st_mtime > STALE_INCOMING_SECONDS:
                left.unlink(missing_ok=True)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or name.startswith("."):
            raise ValueError(f"not an object name: {name!r}")
        return path

    @contextmanager
    def writing(self) -> Iterator[Incoming]:
        descriptor, temporary = tempfile.mkstemp(dir=self._incoming)
        file = os.fdopen(descriptor, "wb")
        incoming = Incoming(file, Path(temporary))
        try:
            yield incoming
            file.close()  # idempotent: the encrypting stream may have closed it already
            if incoming.name is not None:
                target = self._path(incoming.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, target)
        finally:
            file.close()
            Path(temporary).unlink(missing_ok=True)

    @contextmanager
    def reading(self, name: str) -> Iterator[BinaryIO]:
        try:
            file = self._path(name).open("rb")
        except FileNotFoundError:
            raise BlobMissing(name) from None
        with file:
            yield file

    def put(self, name: str, data: bytes) -> None:
        with self.writing() as incoming:
            incoming.file.write(data)
            incoming.keep_as(name)

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(name) from None

    def names(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(str(path.relative_to(self.root)) for path in base.rglob("*") if path.is_file())

    def delete(self, name: str) -> None:
        path = self._path(name)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # the empty folders of a content address go with it
            if parent == self.root or any(parent.iterdir()):
                break
            parent.rmdir()


class BucketBlobs:
    """Objects in an S3-compatible bucket under `prefix`; an upload is spooled to a local
    temporary file and sent when complete (boto3 sends large ones in parts)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    @contextmanager
    def writing(self) -> Iterator[Incoming]:
        descriptor, temporary = tempfile.mkstemp(prefix="complaints-upload-")
        file = os.fdopen(descriptor, "wb")
        incoming = Incoming(file, Path(temporary))
        try:
            yield incoming
            file.close()
            if incoming.name is not None:
                self.client.upload_file(temporary, self.bucket, self.prefix + incoming.name)
        finally:
            file.close()
            Path(temporary).unlink(missing_ok=True)

    @contextmanager
    def reading(self, name: str) -> Iterator[BinaryIO]:
        body = self._object(name)["Body"]
        try:
            yield body
        finally:
            body.close()

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)

    def get(self, name: str) -> bytes:
        body = self._object(name)["Body"]
        with body:
            data: bytes = body.read()
        return data

    def names(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        return sorted(item["Key"][len(self.prefix):] for page in pages for item in page.get("Contents", ()))

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)

    def _object(self, name: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        except self.client.exceptions.NoSuchKey:
            raise BlobMissing(name) from None


def bucket_blobs(bucket: str, prefix: str = "", *, endpoint: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None) -> BucketBlobs:
    """A bucket through boto3 (the optional dependency `complaints[s3]`), created when missing;
    unset credentials come from boto3's own chain (environment, profile, instance role)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key_id,
                          aws_secret_access_key=secret_access_key)
    try:
        client.head_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        # S3 wants the region named, except its first one's.
        where = {"CreateBucketConfiguration": {"LocationConstraint": region}} if region not in (None, "us-east-1") else {}
        client.create_bucket(Bucket=bucket, **where)
    return BucketBlobs(client, bucket, prefix)
