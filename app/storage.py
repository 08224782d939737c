"""Object storage for jobs: a local folder by default, S3-compatible with the ``s3`` extra.

``storage_for(app)`` picks the backend from the configuration: ``STORAGE_URL`` =
``s3://bucket/prefix`` selects ``S3Storage`` (``S3_ENDPOINT_URL`` for MinIO, R2, moto…;
credentials come from boto3's usual chain), otherwise ``LocalStorage`` under
``STORAGE_ROOT`` (default ``<instance>/storage``). Every key passes ``validate_key`` first:
relative, ``/``-separated, no ``..``, at most 1024 characters and 255 per segment.

``LocalStorage`` opens every path one segment at a time from the root, each relative to
the folder opened before it and without following symbolic links (POSIX ``openat`` with
``O_NOFOLLOW``: Linux, macOS). A link anywhere under the root is refused, whether it points
out or not, and a link swapped in between two calls cannot redirect a read or a write.

```
StorageError
├── InvalidKey        the key is unsafe, or its path holds a link, a folder or a special file
├── ObjectNotFound    nothing is stored under the key (yet)
└── ObjectTooLarge    more bytes than the caller accepts (never read past the limit)
```
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from app.errors import ConfigurationError

if TYPE_CHECKING:
    from flask import Flask

_KEY_CHARS = re.compile(r"[A-Za-z0-9!\-_.*'()/ =+@,]+")
MAX_KEY_LENGTH = 1024
#: The longest file name POSIX file systems take (NAME_MAX); keys are ASCII, so bytes.
MAX_SEGMENT_LENGTH = 255
_NO_LINK = os.O_NOFOLLOW | os.O_CLOEXEC
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | _NO_LINK
#: O_NONBLOCK: opening a FIFO planted under the root must not wait for a writer.
_READ = os.O_RDONLY | os.O_NONBLOCK | _NO_LINK
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_LINK


class StorageError(Exception):
    """Storage could not be used (raised for the caller to map)."""


class InvalidKey(StorageError, ValueError):
    """A key is not a safe, relative object key, or its path is not a plain file's."""


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
    if any(len(part) > MAX_SEGMENT_LENGTH for part in parts):
        raise InvalidKey(f"{key!r} has a segment longer than {MAX_SEGMENT_LENGTH} characters")
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

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Return the file's bytes; raise ``ObjectNotFound`` or ``ObjectTooLarge``."""
        folder, name = self._open_folder(key, create=False)
        try:
            fd = os.open(name, _READ, dir_fd=folder)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # O_NOFOLLOW's answer when the file is a link
                raise
            raise _refusal(key, folder, name) from None
        finally:
            os.close(folder)
        try:
            status = os.fstat(fd)
            if stat.S_ISDIR(status.st_mode):
                raise ObjectNotFound(key)
            if not stat.S_ISREG(status.st_mode):
                raise InvalidKey(f"{key!r} is not a regular file")
            _check_size(key, status.st_size, max_bytes)
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as file:
            return _read(file, key, max_bytes)

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Write ``data`` to the key's file atomically, creating its folders."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder, name = self._open_folder(key, create=True)
        try:
            self._check_replaceable(folder, key, name)
            temp = f".tmp-{secrets.token_hex(8)}"
            fd = os.open(temp, _CREATE, 0o600, dir_fd=folder)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException as exc:
                os.unlink(temp, dir_fd=folder)
                if isinstance(exc, IsADirectoryError):  # a folder made since the check
                    raise _refusal(key, folder, name) from None
                raise
        finally:
            os.close(folder)

    def _open_folder(self, key: str, *, create: bool) -> tuple[int, str]:
        """Open the folder holding ``key`` segment by segment; return (its fd, file name)."""
        *folders, name = validate_key(key).split("/")
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        try:
            for segment in folders:
                fd = self._open_child(fd, key, segment, create=create)
        except BaseException:
            os.close(fd)
            raise
        return fd, name

    @staticmethod
    def _open_child(parent: int, key: str, segment: str, *, create: bool) -> int:
        """Open the folder ``segment`` inside ``parent`` (closed on success), never a link."""
        if create:
            try:
                os.mkdir(segment, dir_fd=parent)
            except FileExistsError:
                pass
        try:
            child = os.open(segment, _FOLDER, dir_fd=parent)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except NotADirectoryError:  # a link (O_NOFOLLOW), or a file where a folder should be
            if not create and not _is_link(parent, segment):
                raise ObjectNotFound(key) from None
            raise _refusal(key, parent, segment) from None
        os.close(parent)
        return child

    @staticmethod
    def _check_replaceable(folder: int, key: str, name: str) -> None:
        """Refuse to write over a link, a folder or a special file."""
        try:
            mode = os.lstat(name, dir_fd=folder).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            raise _refusal(key, folder, name)


def _is_link(folder: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=folder).st_mode)
    except OSError:
        return False


def _refusal(key: str, folder: int, name: str) -> InvalidKey:
    """Return the error that says why the path of ``key`` is refused at ``name``."""
    if _is_link(folder, name):
        return InvalidKey(
            f"{key!r}: {name!r} is a symbolic link; links are not followed under the storage root"
        )
    try:
        mode = os.lstat(name, dir_fd=folder).st_mode
    except OSError:  # gone or replaced since the refused operation
        return InvalidKey(f"{key!r}: {name!r} changed while its path was checked")
    kind = (
        "a folder" if stat.S_ISDIR(mode) else "a file" if stat.S_ISREG(mode) else "a special file"
    )
    return InvalidKey(f"{key!r}: {name!r} is {kind}, in the way of the key's path")


def _check_size(key: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ObjectTooLarge(f"{key!r} is {size} bytes, more than the limit of {max_bytes}")


def _read(file: IO[bytes], key: str, max_bytes: int | None) -> bytes:
    """Read ``file`` to its end, never more than ``max_bytes`` + 1 bytes."""
    if max_bytes is None:
        return file.read()
    data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ObjectTooLarge(f"{key!r} is more than the limit of {max_bytes} bytes")
    return data


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
            # ContentLength refuses early; _read bounds the bytes whatever the server says.
            _check_size(key, int(response.get("ContentLength", 0)), max_bytes)
            return _read(body, key, max_bytes)
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
