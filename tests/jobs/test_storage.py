"""app.storage: key validation, the local folder, and S3 through real boto3 against moto."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from app.errors import ConfigurationError
from app.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    ObjectTooLarge,
    S3Storage,
    storage_from_url,
    validate_key,
)
from app.testing import DeliveryClient
from tests.jobs import images
from tests.jobs.conftest import make_app
from tests.servers import free_port

BUCKET = "uploads"


@pytest.mark.parametrize("key", ["a.jpg", "users/42/photo 1.png", "x/y/z.webp", "a..b.jpg"])
def test_valid_keys_pass(key: str) -> None:
    """Relative keys made of safe characters are accepted unchanged."""
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "..", "../a", "a/../b", "/a", "a//b", "./a", "a/", "C:x", "a\\b", "a\0b", "é.jpg"]
)
def test_unsafe_keys_raise(key: str) -> None:
    """Empty, traversing, absolute and oddly-separated keys raise InvalidKey."""
    with pytest.raises(InvalidKey):
        validate_key(key)


def test_local_put_then_get_round_trips(tmp_path: Path) -> None:
    """What is put under a key is read back, in nested folders created on demand."""
    storage = LocalStorage(tmp_path)
    storage.put("a/b/c.bin", b"data", content_type="application/octet-stream")
    assert storage.get("a/b/c.bin") == b"data"
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["c.bin"]


def test_local_missing_and_too_large(tmp_path: Path) -> None:
    """A missing key raises ObjectNotFound; one over max_bytes raises ObjectTooLarge."""
    storage = LocalStorage(tmp_path)
    with pytest.raises(ObjectNotFound):
        storage.get("nope.jpg")
    storage.put("big.bin", b"x" * 100, content_type="application/octet-stream")
    with pytest.raises(ObjectTooLarge):
        storage.get("big.bin", max_bytes=99)


def test_storage_url_must_be_s3() -> None:
    """A STORAGE_URL that is not s3://bucket/prefix is a configuration error."""
    with pytest.raises(ConfigurationError, match="s3://bucket/prefix"):
        storage_from_url("gs://bucket/prefix")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """Run moto's S3 API server on a free loopback port for this module."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Return a real boto3 client on a fresh bucket of the moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def test_s3_put_then_get_under_the_prefix(s3: Any) -> None:
    """S3Storage writes under its prefix with the content type, and reads it back."""
    storage = S3Storage(BUCKET, "/media/", client=s3)
    storage.put("a/b.webp", b"RIFF", content_type="image/webp")
    head = s3.head_object(Bucket=BUCKET, Key="media/a/b.webp")
    assert head["ContentType"] == "image/webp"
    assert storage.get("a/b.webp") == b"RIFF"


def test_s3_missing_and_unsafe_keys(s3: Any) -> None:
    """A missing object raises ObjectNotFound; an unsafe key never reaches S3."""
    storage = S3Storage(BUCKET, "media", client=s3)
    with pytest.raises(ObjectNotFound):
        storage.get("nope.jpg")
    with pytest.raises(InvalidKey):
        storage.get("../other-prefix/x.jpg")


def test_process_image_on_s3(
    s3: Any, s3_endpoint: str, job_config: dict[str, Any], tmp_path: Path
) -> None:
    """With STORAGE_URL=s3://…, process-image reads and writes the bucket."""
    config = {**job_config, "STORAGE_URL": f"s3://{BUCKET}/media", "S3_ENDPOINT_URL": s3_endpoint}
    client = DeliveryClient(make_app(config, tmp_path / "instance"))
    source = images.encode(images.two_tone((1200, 900)), "JPEG")
    s3.put_object(Bucket=BUCKET, Key="media/u/p.jpg", Body=source)
    payload = {"fileKey": "u/p.jpg", "userId": "u", "operations": ["resize", "webp"]}
    response = client.deliver("process-image", {**payload, "targetWidth": 600})
    assert response.status_code == 200, response.get_json()
    stored = s3.get_object(Bucket=BUCKET, Key="media/u/p.w600.webp")
    assert stored["ContentType"] == "image/webp"
    assert Image.open(io.BytesIO(stored["Body"].read())).size == (600, 450)


def test_process_image_on_s3_retries_missing_objects(
    s3: Any, s3_endpoint: str, job_config: dict[str, Any], tmp_path: Path
) -> None:
    """An object not yet in the bucket answers 503 + Retry-After."""
    config = {**job_config, "STORAGE_URL": f"s3://{BUCKET}/media", "S3_ENDPOINT_URL": s3_endpoint}
    client = DeliveryClient(make_app(config, tmp_path / "instance"))
    payload = {"fileKey": "u/later.jpg", "userId": "u", "operations": ["thumbnail"]}
    response = client.deliver("process-image", payload)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
