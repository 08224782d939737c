"""app.storage: key validation, the local folder, and S3 through real boto3 against moto."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer
from PIL import Image

from app import storage as storage_module
from app.errors import ConfigurationError
from app.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    ObjectTooLarge,
    S3Storage,
    s3_client,
    storage_for,
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
    with not_found("nope.jpg"):
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
    stored = s3.get_object(Bucket=BUCKET, Key="media/u/p.jpg.w600.webp")
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


# --- LocalStorage: every path stays inside the root, no link followed -----------------

LINKS = "links are not followed under the storage root"


def exactly(kind: type[Exception], message: str) -> Any:
    """Expect ``kind`` with exactly ``message``: the message is what a 489 tells the caller."""
    return pytest.raises(kind, match=f"^{re.escape(message)}$")


@contextlib.contextmanager
def not_found(key: str) -> Iterator[None]:
    """Expect ObjectNotFound naming ``key``."""
    with pytest.raises(ObjectNotFound) as caught:
        yield
    assert (caught.value.key, caught.value.args, str(caught.value)) == (
        key,
        (key,),
        f"no object stored under {key!r}",
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Return a folder outside the storage root holding a secret file."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.jpg").write_bytes(b"secret")
    return folder


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    (tmp_path / "root").mkdir()
    return LocalStorage(tmp_path / "root")


def test_a_linked_file_is_refused_both_ways(local: LocalStorage, outside: Path) -> None:
    """A file that is a symlink out of the root is neither read nor written through."""
    (local.root / "a.jpg").symlink_to(outside / "secret.jpg")
    message = f"'a.jpg': 'a.jpg' is a symbolic link; {LINKS}"
    with exactly(InvalidKey, message):
        local.get("a.jpg")
    with exactly(InvalidKey, message):
        local.put("a.jpg", b"overwrite", content_type="image/jpeg")
    assert (outside / "secret.jpg").read_bytes() == b"secret"
    assert (local.root / "a.jpg").is_symlink()


def test_a_linked_folder_is_refused_both_ways(local: LocalStorage, outside: Path) -> None:
    """A folder on the key's path that is a symlink out of the root is not traversed."""
    (local.root / "u").symlink_to(outside)
    with exactly(InvalidKey, f"'u/secret.jpg': 'u' is a symbolic link; {LINKS}"):
        local.get("u/secret.jpg")
    with exactly(InvalidKey, f"'u/new.jpg': 'u' is a symbolic link; {LINKS}"):
        local.put("u/new.jpg", b"x", content_type="image/jpeg")
    with exactly(InvalidKey, f"'u/deeper/new.jpg': 'u' is a symbolic link; {LINKS}"):
        local.put("u/deeper/new.jpg", b"x", content_type="image/jpeg")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.jpg"]


def test_links_inside_the_root_are_refused_too(local: LocalStorage) -> None:
    """A link is refused even when it points inside the root: no link is ever followed."""
    local.put("real/a.jpg", b"data", content_type="image/jpeg")
    (local.root / "alias").symlink_to(local.root / "real")
    (local.root / "real" / "b.jpg").symlink_to(local.root / "real" / "a.jpg")
    for key in ("alias/a.jpg", "real/b.jpg"):
        with pytest.raises(InvalidKey, match="symbolic link"):
            local.get(key)


def test_a_link_swapped_in_between_calls_is_caught(local: LocalStorage, outside: Path) -> None:
    """A folder replaced by a link after a first write is refused on the next one."""
    local.put("u/a.jpg", b"1", content_type="image/jpeg")
    (local.root / "u" / "a.jpg").unlink()
    (local.root / "u").rmdir()
    (local.root / "u").symlink_to(outside)
    with pytest.raises(InvalidKey):
        local.put("u/a.jpg", b"2", content_type="image/jpeg")
    assert not (outside / "a.jpg").exists()


def test_a_racing_link_never_lets_a_write_out(local: LocalStorage, outside: Path) -> None:
    """While a thread flips a folder and a link to outside, no write ever lands outside.

    The old check (resolve the path, compare, then open it by name) left a window between
    the check and the open; each segment is now opened relative to the one checked before.
    """
    local.put("u/seed.jpg", b"0", content_type="image/jpeg")
    folder = local.root / "u"
    stop = threading.Event()

    def flip() -> None:
        """Move the folder aside, put a link to outside in its place, then undo both."""
        for n in itertools.count():
            if stop.is_set():
                return
            aside = local.root / f"aside-{n}"
            with contextlib.suppress(OSError):  # put() may have made a new "u" meanwhile
                os.rename(folder, aside)
                os.symlink(outside, folder)
                os.unlink(folder)
                os.rename(aside, folder)

    flipper = threading.Thread(target=flip)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the two threads as finely as possible
    flipper.start()
    outcomes = set()
    try:
        for i in range(1000):
            try:
                local.put(f"u/{i}.jpg", b"x", content_type="image/jpeg")
                outcomes.add("written")
            except (InvalidKey, ObjectNotFound, FileNotFoundError) as exc:
                outcomes.add(type(exc).__name__)
    finally:
        stop.set()
        flipper.join()
        sys.setswitchinterval(interval)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.jpg"], outcomes


@pytest.mark.parametrize(
    "key",
    ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "a\\..\\x.jpg", "a\0b", "C:/x", "x" * 1025],
)
def test_unsafe_keys_reach_no_file(local: LocalStorage, key: str) -> None:
    """Traversal, absolute, NUL, backslash and overlong keys raise InvalidKey both ways."""
    with pytest.raises(InvalidKey):
        local.get(key)
    with pytest.raises(InvalidKey):
        local.put(key, b"x", content_type="image/jpeg")
    assert list(local.root.iterdir()) == []


def test_a_segment_longer_than_a_file_name_is_an_invalid_key(local: LocalStorage) -> None:
    """A 256-character segment is InvalidKey (the file system would say ENAMETOOLONG)."""
    validate_key("a/" + "x" * 255)
    with pytest.raises(InvalidKey, match="segment longer than 255"):
        local.put("a/" + "x" * 256, b"x", content_type="image/jpeg")
    with pytest.raises(InvalidKey, match="segment longer than 255"):
        local.get("x" * 256)


def test_a_fifo_is_refused_without_blocking(local: LocalStorage) -> None:
    """A FIFO planted under the root is refused at once (opening it would wait forever)."""
    os.mkfifo(local.root / "pipe.jpg")
    result: list[BaseException | bytes] = []

    def read() -> None:
        try:
            result.append(local.get("pipe.jpg"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # unblock the old code's open() so the thread ends
        os.close(os.open(local.root / "pipe.jpg", os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=5)
        pytest.fail("get() blocked on a FIFO")
    assert isinstance(result[0], InvalidKey)
    assert "not a regular file" in str(result[0])
    assert str(result[0]) == "'pipe.jpg' is not a regular file"
    message = "'pipe.jpg': 'pipe.jpg' is a special file, in the way of the key's path"
    with exactly(InvalidKey, message):
        local.put("pipe.jpg", b"x", content_type="image/jpeg")


def test_folders_and_files_in_the_way(local: LocalStorage) -> None:
    """A folder is no object to read and cannot be overwritten; a file is no folder."""
    local.put("a/b.jpg", b"1", content_type="image/jpeg")
    with not_found("a"):
        local.get("a")
    with exactly(InvalidKey, "'a': 'a' is a folder, in the way of the key's path"):
        local.put("a", b"2", content_type="image/jpeg")
    with not_found("a/b.jpg/c.jpg"):
        local.get("a/b.jpg/c.jpg")
    with exactly(InvalidKey, "'a/b.jpg/c.jpg': 'b.jpg' is a file, in the way of the key's path"):
        local.put("a/b.jpg/c.jpg", b"3", content_type="image/jpeg")
    with not_found("a/missing/c.jpg"):
        local.get("a/missing/c.jpg")
    with not_found("a/missing.jpg"):
        local.get("a/missing.jpg")
    assert local.get("a/b.jpg") == b"1"


def test_a_missing_root_is_created_on_write(tmp_path: Path) -> None:
    """Reading from a root that does not exist yet is ObjectNotFound; writing creates it."""
    storage = LocalStorage(tmp_path / "new" / "root")
    with not_found("a.jpg"):
        storage.get("a.jpg")
    storage.put("a.jpg", b"x", content_type="image/jpeg")
    assert (tmp_path / "new" / "root" / "a.jpg").read_bytes() == b"x"


def test_writes_replace_atomically_and_leave_no_temp_file(local: LocalStorage) -> None:
    """A second put replaces the first; no temporary file stays behind, even on failure."""
    local.put("a.jpg", b"first", content_type="image/jpeg")
    local.put("a.jpg", b"second", content_type="image/jpeg")
    assert local.get("a.jpg") == b"second"
    with pytest.raises(TypeError):
        local.put("b.jpg", "not bytes", content_type="image/jpeg")  # type: ignore[arg-type]
    assert sorted(p.name for p in local.root.iterdir()) == ["a.jpg"]
    assert oct((local.root / "a.jpg").stat().st_mode & 0o777) == oct(0o600)


def test_max_bytes_is_exact(local: LocalStorage) -> None:
    """max_bytes accepts a file of exactly that size and refuses one byte more."""
    local.put("a.bin", b"x" * 10, content_type="application/octet-stream")
    assert local.get("a.bin", max_bytes=10) == b"x" * 10
    with exactly(ObjectTooLarge, "'a.bin' is 10 bytes, more than the limit of 9"):
        local.get("a.bin", max_bytes=9)
    assert local.get("a.bin", max_bytes=None) == b"x" * 10


def test_a_file_growing_after_its_size_was_checked_is_still_bounded(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes appended after the size check are never read past max_bytes + 1."""
    local.put("grow.bin", b"x" * 10, content_type="application/octet-stream")
    real_fstat = os.fstat

    def fstat_then_grow(fd: int) -> os.stat_result:
        status = real_fstat(fd)
        with open(local.root / "grow.bin", "ab") as file:
            file.write(b"y" * 1000)
        return status

    monkeypatch.setattr(os, "fstat", fstat_then_grow)
    with exactly(ObjectTooLarge, "'grow.bin' is more than the limit of 20 bytes"):
        local.get("grow.bin", max_bytes=20)


# --- Keys built from hostile segments ---------------------------------------------------

SEGMENTS = st.one_of(
    st.sampled_from(["..", ".", "", "...", "link", "a", "b.jpg", " ", "~", "C:", "x" * 256]),
    st.sampled_from(["\\", "%2e%2e", "..\\..", "\u2215", "\uff0e\uff0e", "\n", "\0", "é"]),
    st.text(min_size=1, max_size=8),
)
KEYS = st.builds(
    lambda lead, parts, separator: lead + separator.join(parts),
    st.sampled_from(["", "", "/", "\\", "C:", "./"]),
    st.lists(SEGMENTS, min_size=1, max_size=6),
    st.sampled_from(["/", "/", "\\", "//", "/./"]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=KEYS)
def test_hostile_keys_never_leave_the_root(tmp_path: Path, key: str) -> None:
    """Any key raises InvalidKey / ObjectNotFound or names a plain file under the root.

    The root holds ``link``, a symlink to a folder outside: no key reads or writes
    through it, whatever its segments and separators.
    """
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(exist_ok=True)
    outside.mkdir(exist_ok=True)
    (outside / "secret").write_bytes(b"secret")
    if not (root / "link").is_symlink():
        (root / "link").symlink_to(outside)
    storage = LocalStorage(root)
    try:
        storage.put(key, b"data", content_type="application/octet-stream")
    except (InvalidKey, ObjectNotFound):
        with pytest.raises((InvalidKey, ObjectNotFound)):
            storage.get(key)
    else:
        assert key.split("/")[0] != "link"  # the root's link, never gone through
        assert all(0 < len(part) <= 255 and part not in (".", "..") for part in key.split("/"))
        path = Path(os.path.realpath(root / key))
        assert path.is_relative_to(root) and path.read_bytes() == b"data"
        assert storage.get(key) == b"data"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


# --- S3: bounded reads, URL parsing, one storage per app and process -------------------


class _Body(io.BytesIO):
    """A response body that counts the bytes handed out."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.handed_out = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.handed_out += len(data)
        return data


class _FakeS3:
    """Just enough of a boto3 client to answer get_object with a chosen ContentLength."""

    class exceptions:  # noqa: N801 - boto3's spelling
        NoSuchKey = KeyError

    def __init__(self, data: bytes, content_length: int | None) -> None:
        self.body = _Body(data)
        self.content_length = content_length
        self.keys: list[str] = []

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        self.keys.append(Key)
        response: dict[str, Any] = {"Body": self.body}
        if self.content_length is not None:
            response["ContentLength"] = self.content_length
        return response


@pytest.mark.parametrize("content_length", [None, 0, 5])
def test_s3_reads_no_more_than_the_limit_whatever_the_server_says(
    content_length: int | None,
) -> None:
    """A body longer than its ContentLength (or without one) is cut at max_bytes + 1."""
    client = _FakeS3(b"x" * 10_000, content_length)
    storage = S3Storage(BUCKET, "", client=client)
    with exactly(ObjectTooLarge, "'a.jpg' is more than the limit of 100 bytes"):
        storage.get("a.jpg", max_bytes=100)
    assert client.body.handed_out == 101
    assert client.body.closed
    assert client.keys == ["a.jpg"]


def test_s3_refuses_on_content_length_before_reading() -> None:
    """An announced size over the limit is refused without reading the body."""
    client = _FakeS3(b"x" * 10, 10_000)
    with exactly(ObjectTooLarge, "'a.jpg' is 10000 bytes, more than the limit of 100"):
        S3Storage(BUCKET, "p", client=client).get("a.jpg", max_bytes=100)
    assert client.body.handed_out == 0
    assert client.body.closed
    assert client.keys == ["p/a.jpg"]


def test_s3_reads_whole_bodies_within_the_limit() -> None:
    """Bodies of exactly max_bytes, or with no limit, are read whole."""
    client = _FakeS3(b"x" * 100, 100)
    assert S3Storage(BUCKET, client=client).get("a", max_bytes=100) == b"x" * 100
    assert S3Storage(BUCKET, client=_FakeS3(b"y" * 7, None)).get("a") == b"y" * 7
    assert S3Storage(BUCKET, client=_FakeS3(b"", None)).get("a", max_bytes=0) == b""
    assert client.keys == ["a"]  # no prefix by default


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://b", "b", ""),
        ("s3://b/", "b", ""),
        ("s3://b/media/2024/", "b", "media/2024"),
        ("s3://b//Xray/", "b", "Xray"),
    ],
)
def test_storage_urls_name_bucket_and_prefix(
    url: str, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s3://bucket/prefix gives the bucket and the prefix without its slashes."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage = storage_from_url(url, endpoint_url="http://127.0.0.1:9")
    assert (storage.bucket, storage.prefix) == (bucket, prefix)
    assert storage.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert storage.object_key("k.jpg") == (f"{prefix}/k.jpg" if prefix else "k.jpg")


@pytest.mark.parametrize("url", ["s3:///prefix", "s3:bucket", "https://b/p", "b/p", ""])
def test_storage_urls_without_a_bucket_are_refused(url: str) -> None:
    """A STORAGE_URL that is not s3:// with a bucket names the expected form."""
    with pytest.raises(ConfigurationError, match="s3://bucket/prefix"):
        storage_from_url(url)


def test_s3_without_boto3_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without boto3 installed, s3 storage is a configuration error naming the extra."""
    monkeypatch.setitem(sys.modules, "boto3", None)
    message = "STORAGE_URL=s3://… needs boto3: pip install 'qstash-jobs[s3]'"
    with exactly(ConfigurationError, message):
        s3_client()


def test_storage_for_is_made_once_per_app_and_process(
    job_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same storage serves an app until the process forks; the root is STORAGE_ROOT."""
    app = make_app(job_config, tmp_path / "instance")
    first = storage_for(app)
    assert isinstance(first, LocalStorage)
    assert first.root == Path(job_config["STORAGE_ROOT"]).resolve()
    assert storage_for(app) is first
    monkeypatch.setattr(os, "getpid", lambda: -1)
    assert storage_for(app) is not first


def test_storage_for_defaults_to_the_instance_folder(
    job_config: dict[str, Any], tmp_path: Path
) -> None:
    """Without STORAGE_ROOT nor STORAGE_URL, files live in <instance>/storage."""
    app = make_app({**job_config, "STORAGE_ROOT": None}, tmp_path / "instance")
    storage = storage_for(app)
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "instance" / "storage").resolve()


def test_storage_for_picks_s3_from_storage_url(
    job_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STORAGE_URL selects S3Storage, with S3_ENDPOINT_URL as the client's endpoint."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = {
        **job_config,
        "STORAGE_URL": "s3://b/p",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    storage = storage_for(make_app(config, tmp_path / "instance"))
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == ("b", "p")
    assert storage.client.meta.endpoint_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "the key is empty"),
        (None, "the key is empty"),
        ("x" * 1025, "the key is longer than 1024 characters"),
        ("/a", "'/a' is absolute: keys are relative to the storage root"),
        ("a\\b", "'a\\\\b' is absolute: keys are relative to the storage root"),
        ("C:x", "'C:x' is absolute: keys are relative to the storage root"),
        ("c:x", "'c:x' is absolute: keys are relative to the storage root"),
        ("é.jpg", "'é.jpg' contains characters outside [A-Za-z0-9 !-_.*'()/=+@,]"),
        ("a//b", "'a//b' has an empty, '.' or '..' segment"),
        ("a/" + "x" * 256, f"'a/{'x' * 256}' has a segment longer than 255 characters"),
    ],
)
def test_key_refusals_say_why(key: str, message: str) -> None:
    """Each refusal names the key and the rule it breaks: the 489 carries this text."""
    with exactly(InvalidKey, message):
        validate_key(key)


def test_the_longest_keys_are_valid() -> None:
    """1024 characters, in segments of 255, are accepted."""
    key = "/".join(["x" * 255] * 3 + ["x" * 254, "y"])
    assert len(key) == 1024
    assert validate_key(key) == key


def test_a_folder_made_between_the_check_and_the_rename_is_refused(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a folder appears where the file goes after the check, the rename's error is an
    InvalidKey naming it, and the temporary file is removed."""
    (local.root / "late").mkdir()
    monkeypatch.setattr(LocalStorage, "_check_replaceable", staticmethod(lambda *args: None))
    with exactly(InvalidKey, "'late': 'late' is a folder, in the way of the key's path"):
        local.put("late", b"x", content_type="image/jpeg")
    assert sorted(p.name for p in local.root.iterdir()) == ["late"]
    assert list((local.root / "late").iterdir()) == []


def test_a_path_gone_before_its_refusal_is_explained(local: LocalStorage) -> None:
    """A name that vanished between a failed open and the look at why is no link, and the
    refusal says the path changed (both helpers are reached only through that race)."""
    folder = os.open(local.root, os.O_RDONLY)
    try:
        assert storage_module._is_link(folder, "gone") is False
        refusal = storage_module._refusal("a/gone", folder, "gone")
    finally:
        os.close(folder)
    assert str(refusal) == "'a/gone': 'gone' changed while its path was checked"
