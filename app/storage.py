"""Object storage for jobs: a local folder by default, S3-compatible with the ``s3`` extra.

``storage_for(app)`` picks the backend from the configuration: ``STORAGE_URL`` =
``s3://bucket/prefix`` selects ``S3Storage`` (``S3_ENDPOINT_URL`` for MinIO, R2, moto…;
credentials come from boto3's usual chain), otherwise ``LocalStorage`` under
``STORAGE_ROOT`` (default ``<instance>/storage``). Every key passes ``validate_key`` first:
relative, ``/``-separated, no ``..``, no escaping the root.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from app.errors import ConfigurationError

if TYPE_CHECKING:
    from flask import Flask

_KEY_CHARS = re.compile(r"[A-Za-z0-9!\-_.*'()/ =+@,]+")
MAX_KEY_LENGTH = 1024


class StorageError(Exception):
    """Storage could not be used (raised for the caller to map)."""


class InvalidKey(StorageError, ValueError):
    """A key is not a safe, relative object key."""


class ObjectNotFound(StorageError, KeyError):
    """No object is stored under the key (yet)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object stored under {self.key!r}"


class ObjectTooLarge(StorageError):
    """The object is larger than the caller accepts."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key; raise ``InvalidKey`` otherwise."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("the key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"the key is longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/") or "\\" in key or re.match(r"[A-Za-z]:", key):
        raise InvalidKey(f"{key!r} is absolute: keys are relative to the storage root")
    if not _KEY_CHARS.fullmatch(key):
        raise InvalidKey(f"{key!r} contains characters outside [A-Za-z0-9 !-_.*'()/=+@,]")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey(f"{key!r} has an empty, '.' or '..' segment")
    return key


class Storage(Protocol):
    """Where job inputs and outputs live, addressed by validated keys."""

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Return the object's bytes; raise ``ObjectNotFound`` or ``ObjectTooLarge``."""
        ...

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing any previous object."""
        ...


class LocalStorage:
    """Objects as files under a root folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """Return the file path of ``key``, guaranteed to be inside the root."""
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):  # a symlink inside the root pointing out
            raise InvalidKey(f"{key!r} escapes the storage root")
        return path

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Return the file's bytes; raise ``ObjectNotFound`` or ``ObjectTooLarge``."""
        path = self.path(key)
        try:
            with path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                _check_size(key, size, max_bytes)
                return file.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Write ``data`` to the key's file atomically."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def _check_size(key: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ObjectTooLarge(f"{key!r} is {size} bytes, more than the limit of {max_bytes}")


class S3Storage:
    """Objects in an S3-compatible bucket under a key prefix, through boto3."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    def object_key(self, key: str) -> str:
        """Return the bucket key of ``key`` (prefix + validated key)."""
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Download the object; raise ``ObjectNotFound`` or ``ObjectTooLarge``."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except self.client.exceptions.NoSuchKey:
            raise ObjectNotFound(key) from None
        body = response["Body"]
        try:
            _check_size(key, int(response.get("ContentLength", 0)), max_bytes)
            data: bytes = body.read()
            return data
        finally:
            body.close()

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Upload ``data`` under ``key``."""
        self.client.put_object(
            Bucket=self.bucket, Key=self.object_key(key), Body=data, ContentType=content_type
        )


def s3_client(endpoint_url: str | None = None) -> Any:
    """Return a boto3 S3 client (the ``s3`` extra), honouring ``endpoint_url``."""
    try:
        import boto3
    except ImportError:
        raise ConfigurationError(
            "STORAGE_URL=s3://… needs boto3: pip install 'qstash-jobs[s3]'"
        ) from None
    return boto3.client("s3", endpoint_url=endpoint_url)


def storage_from_url(url: str, *, endpoint_url: str | None = None) -> S3Storage:
    """Return the storage an ``s3://bucket/prefix`` URL names."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigurationError(f"STORAGE_URL must look like s3://bucket/prefix, not {url!r}")
    return S3Storage(parts.netloc, parts.path, client=s3_client(endpoint_url))


def storage_for(app: Flask) -> Storage:
    """Return the app's storage, creating it once per app (and per process)."""
    key = ("storage", os.getpid())
    cached = app.extensions.get("qstash_jobs.storage")
    if cached is not None and cached[0] == key:
        storage: Storage = cached[1]
        return storage
    config = app.config
    if config.get("STORAGE_URL"):
        storage = storage_from_url(config["STORAGE_URL"], endpoint_url=config["S3_ENDPOINT_URL"])
    else:
        storage = LocalStorage(config.get("STORAGE_ROOT") or Path(app.instance_path) / "storage")
    app.extensions["qstash_jobs.storage"] = (key, storage)
    return storage
