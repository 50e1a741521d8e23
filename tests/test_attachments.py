"""Attachments through a real server (`complaints run`): uploads streamed in and kept
encrypted, downloads for those who may read the complaint, refusals that leave nothing
behind, and erasure that leaves nothing readable (docs/attachments.md). The same on an
S3-compatible server (moto's, a real HTTP S3 API on a loopback port).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import httpx
import pytest

from scripts.serving import free_port, wait_until_serving
from tests.running import complaints_run, token

MAX_BYTES = 2 * 1024 * 1024
# A recognisable run of bytes inside each file: found in the store's bytes only if a file is
# kept in clear somewhere.
MARKER = b"PLAINTEXT-MARKER-" + uuid.uuid4().hex.encode()


def picture(size: int = 1_500_000) -> bytes:
    """A file of `size` bytes: random, with the marker in it (twice, across a segment boundary)."""
    body = bytearray(os.urandom(size))
    for at in (1000, 1024 * 1024 - 10):
        body[at:at + len(MARKER)] = MARKER
    return bytes(body)


class Desk:
    """A served command API, with a token per demo user."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._tokens: dict[str, str] = {}

    def as_(self, username: str, **headers: str) -> dict[str, str]:
        if username not in self._tokens:
            self._tokens[username] = token(self.base, username)
        return {"authorization": f"Bearer {self._tokens[username]}", **headers}

    def upload(self, content: bytes | Iterator[bytes], filename: str = "截图 1.png", media_type: str = "image/png",
               user: str = "intake", **headers: str) -> httpx.Response:
        return httpx.post(f"{self.base}/attachments", params={"filename": filename}, content=content,
                          headers=self.as_(user, **{"content-type": media_type}, **headers), timeout=60)

    def register(self, customer: str, attachments: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
        answer = httpx.post(f"{self.base}/complaints", headers=self.as_("intake"), timeout=30, json={
            "channel": "web", "customer": {"id": customer},
            "customer_personal": {"name": "Li Wei", "contact": "li.wei@example.com"},
            "title": "Screen broken", "description": "See the photo", "product": "mobile-app",
            "attachments": attachments})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["complaint_id"])

    def command(self, complaint_id: str, path: str, user: str, body: dict[str, Any]) -> None:
        answer = httpx.post(f"{self.base}/complaints/{complaint_id}/{path}", json=body, headers=self.as_(user),
                            timeout=30)
        assert answer.status_code == 200, answer.text

    def download(self, complaint_id: str, sha256: str, user: str = "intake", **headers: str) -> httpx.Response:
        return httpx.get(f"{self.base}/complaints/{complaint_id}/attachments/{sha256}",
                         headers=self.as_(user, **headers), timeout=60)

    def erase(self, customer: str) -> None:
        answer = httpx.post(f"{self.base}/customers/{customer}/erasure", json={"legal_basis": "PIPL Art. 47"},
                            headers=self.as_("admin"), timeout=30)
        assert answer.status_code == 200, answer.text


def as_attachment(uploaded: dict[str, Any]) -> dict[str, Any]:
    """A registration's attachment for an upload's answer."""
    return {"filename": uploaded["name"], "content_type": uploaded["media_type"], "size_bytes": uploaded["size"],
            "storage_ref": f"sha256:{uploaded['sha256']}"}


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Desk, Path]]:
    run = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("COMPLAINTS_ATTACHMENT_MAX_BYTES", str(MAX_BYTES))
        with complaints_run(run) as base:
            yield Desk(base), run / "var" / "attachments"


def test_an_upload_is_kept_encrypted_and_answered_to_those_who_may_read_its_complaint(
        served: tuple[Desk, Path]) -> None:
    desk, blobs = served
    content = picture()
    uploaded = desk.upload(content)
    assert uploaded.status_code == 201, uploaded.text
    sha256 = hashlib.sha256(content).hexdigest()
    assert uploaded.json() == {"sha256": sha256, "name": "截图 1.png", "size": len(content), "media_type": "image/png"}
    stored = files_under(blobs)
    assert not any(MARKER in data for data in stored.values()), "a file is kept in clear"
    # Before a complaint refers to it, its key is the master key's (no customer yet).
    assert sorted(name.rsplit("/", 1)[1] for name in stored if name.startswith(sha256)) == ["blob", "pending"]

    complaint_id = desk.register("C-att-1", [as_attachment(uploaded.json())])
    # Referred to: its key is the customer's now, and the master key opens it no more.
    keys = sorted(name.rsplit("/", 1)[1] for name in files_under(blobs) if name.startswith(sha256))
    assert keys[0] == "blob" and len(keys) == 2 and keys[1].startswith("owner-"), keys

    answer = desk.download(complaint_id, sha256)
    assert answer.status_code == 200, answer.text
    assert answer.content == content
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["content-disposition"] == f"attachment; filename*=UTF-8''{quote('截图 1.png')}"
    assert answer.headers["x-content-type-options"] == "nosniff"

    # Role and team: the billing team's once assigned there; another team's agent is refused,
    # a role without personal data gets the file without its name, one that reads no complaint nothing.
    desk.command(complaint_id, "triage", "billing-lead", {"category": "billing", "severity": "minor"})
    desk.command(complaint_id, "assign", "billing-lead", {"team": "billing", "agent": "billing-1"})
    assert desk.download(complaint_id, sha256, "billing-1").content == content
    refused = desk.download(complaint_id, sha256, "logistics-1")
    assert refused.status_code == 403 and refused.json()["type"] == "access_denied"
    assert desk.download(complaint_id, sha256, "executive").status_code == 403
    unnamed = desk.download(complaint_id, sha256, "quality")
    assert unnamed.status_code == 200 and unnamed.content == content
    assert unnamed.headers["content-disposition"] == f"attachment; filename*=UTF-8''attachment-{sha256[:12]}"

    # A file the complaint does not refer to (uploaded, or not), an unknown complaint, no hash.
    other = desk.upload(b"another file", "other.txt", "text/plain").json()["sha256"]
    for sha in (other, "0" * 64):
        missing = desk.download(complaint_id, sha)
        assert missing.status_code == 404 and missing.json()["type"] == "attachment_not_found", missing.text
        assert missing.json()["sha256"] == sha
    assert desk.download(str(uuid.uuid4()), sha256).json()["type"] == "complaint_not_found"
    malformed = desk.download(complaint_id, "not-a-hash")
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["loc"] == ["path", "sha256"]
    chinese = desk.download(complaint_id, "0" * 64, **{"accept-language": "zh-CN"})
    assert chinese.json()["detail"].startswith(f"投诉 {complaint_id} 没有")


def test_an_attachment_field_refers_to_an_upload(served: tuple[Desk, Path]) -> None:
    desk, blobs = served
    content = picture(200_000)
    uploaded = desk.upload(content, "defect.jpg", "image/jpeg").json()
    complaint_id = desk.register("C-att-field")
    desk.command(complaint_id, "triage", "billing-lead",
                 {"category": "product_defect", "severity": "minor", "fields": {"defect_photo": uploaded}})
    keys = [name.rsplit("/", 1)[1] for name in files_under(blobs) if name.startswith(uploaded["sha256"])]
    assert "pending" not in keys and any(key.startswith("owner-") for key in keys), keys
    answer = desk.download(complaint_id, uploaded["sha256"])
    assert answer.status_code == 200 and answer.content == content
    assert answer.headers["content-disposition"] == "attachment; filename*=UTF-8''defect.jpg"


def test_refused_uploads_leave_nothing_behind(served: tuple[Desk, Path]) -> None:
    desk, blobs = served
    before = files_under(blobs)
    too_large = picture(MAX_BYTES + 1)

    declared = desk.upload(too_large)  # Content-Length says so: refused before reading
    assert declared.status_code == 413 and declared.json()["type"] == "attachment_too_large", declared.text
    assert declared.json()["limit"] == MAX_BYTES

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused as the limit is passed
        for at in range(0, len(too_large), 256 * 1024):
            yield too_large[at:at + 256 * 1024]

    streamed = desk.upload(chunked(), **{"accept-language": "zh-CN"})
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["detail"] == f"附件超过了 {MAX_BYTES} 字节的上限（COMPLAINTS_ATTACHMENT_MAX_BYTES）"

    for media_type in ("application/x-msdownload", "text/html; charset=utf-8", ""):
        refused = desk.upload(b"MZ...", "setup.exe", media_type)
        assert refused.status_code == 415, refused.text
        assert refused.json()["type"] == "media_type_not_accepted"
        assert refused.json()["media_type"] == (media_type.split(";")[0] or "(none)")
    unnamed = httpx.post(f"{desk.base}/attachments", content=b"x",
                         headers=desk.as_("intake", **{"content-type": "text/plain"}))
    assert unnamed.status_code == 422 and unnamed.json()["detail"][0]["loc"] == ["query", "filename"]
    nul = desk.upload(b"x", "a\x00b.txt", "text/plain")
    assert nul.status_code == 422 and nul.json()["detail"][0]["loc"] == ["query", "filename"]
    assert httpx.post(f"{desk.base}/attachments?filename=a.txt", content=b"x").status_code == 401
    assert desk.upload(b"x", "a.txt", "text/plain", user="executive").status_code == 403

    assert files_under(blobs) == before, "a refused upload left something"


def test_after_erasure_the_customers_attachments_no_longer_open(served: tuple[Desk, Path]) -> None:
    desk, blobs = served
    content = picture(300_000)
    sha256 = hashlib.sha256(content).hexdigest()
    erased_one = desk.register("C-att-erased", [as_attachment(desk.upload(content).json())])
    # Another customer sends the very same file: a copy of its own, under its own key.
    kept_one = desk.register("C-att-kept", [as_attachment(desk.upload(content, "same.png").json())])
    assert desk.download(erased_one, sha256).content == content
    keys = sorted(name.split("/", 1)[1] for name in files_under(blobs) if name.startswith(sha256))
    assert len(keys) == 4 and not any(key.endswith("/pending") for key in keys), keys  # no master key opens them

    desk.erase("C-att-erased")
    gone = desk.download(erased_one, sha256)
    assert gone.status_code == 410 and gone.json()["type"] == "attachment_erased", gone.text
    assert desk.download(kept_one, sha256).content == content  # the other customer's copy is theirs
    # No key opens the erased customer's copy any more: deleted, the other one alone left.
    left = sorted(name.split("/", 1)[1] for name in files_under(blobs) if name.startswith(sha256))
    assert len(left) == 2 and left[0].endswith("/blob") and "/owner-" in left[1], left
    assert not any(MARKER in data for data in files_under(blobs).values())

    # A third customer's complaint that only knows the hash: no copy opens for it.
    stranger = desk.register("C-att-stranger", [{"filename": "x.png", "content_type": "image/png",
                                                 "size_bytes": len(content), "storage_ref": f"sha256:{sha256}"}])
    assert desk.download(stranger, sha256).json()["type"] == "attachment_not_found"


# ---------------------------------------------------------------------------- S3
@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a loopback port: its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/moto-api/", timeout=60)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def test_attachments_in_an_s3_bucket(s3: str, tmp_path: Path) -> None:
    credentials = {"COMPLAINTS_S3_ACCESS_KEY_ID": "test", "COMPLAINTS_S3_SECRET_ACCESS_KEY": "test",
                   "COMPLAINTS_ATTACHMENT_MAX_BYTES": str(MAX_BYTES)}
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"COMPLAINTS_S3_BUCKET": "complaints-test", "COMPLAINTS_S3_ENDPOINT": s3,
                            "COMPLAINTS_S3_REGION": "us-east-1", **credentials}.items():
            env.setenv(name, value)
        with complaints_run(tmp_path) as base:
            desk = Desk(base)
            content = picture(2_000_000)
            uploaded = desk.upload(content)
            assert uploaded.status_code == 201, uploaded.text
            complaint_id = desk.register("C-s3", [as_attachment(uploaded.json())])
            answer = desk.download(complaint_id, uploaded.json()["sha256"])
            assert answer.status_code == 200 and answer.content == content
            assert desk.upload(picture(MAX_BYTES + 1)).status_code == 413

            bucket = boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="test",
                                  aws_secret_access_key="test")
            objects = [item["Key"] for item in bucket.list_objects_v2(Bucket="complaints-test")["Contents"]]
            assert all(key.startswith(f"attachments/{uploaded.json()['sha256']}/") for key in objects), objects
            stored = [bucket.get_object(Bucket="complaints-test", Key=key)["Body"].read() for key in objects]
            assert not any(MARKER in data for data in stored)
            assert not (tmp_path / "var" / "attachments").exists()

            desk.erase("C-s3")
            assert desk.download(complaint_id, uploaded.json()["sha256"]).status_code == 410
            assert "Contents" not in bucket.list_objects_v2(Bucket="complaints-test")
