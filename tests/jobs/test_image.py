"""process-image through signed deliveries: each operation on real files, each bad input."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from PIL import ExifTags, Image

from app.testing import DeliveryClient
from jobs.image import output_key
from tests.jobs import images
from tests.jobs.conftest import make_app


@pytest.fixture
def storage_root(app: Flask) -> Path:
    root = Path(app.config["STORAGE_ROOT"])
    root.mkdir(parents=True, exist_ok=True)
    return root


def store(root: Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def deliver(client: DeliveryClient, key: str, operations: list[str], **extra: Any) -> Any:
    payload = {"fileKey": key, "userId": "user_1", "operations": operations, **extra}
    return client.deliver("process-image", payload)


def opened(root: Path, key: str) -> Image.Image:
    return Image.open(io.BytesIO((root / key).read_bytes()))


def test_resize_webp_thumbnail_outputs_are_listed_and_stored(
    client: DeliveryClient, storage_root: Path
) -> None:
    """resize+webp+thumbnail stores a WebP at targetWidth and a 256 px square, and lists both."""
    store(storage_root, "u/photo.jpg", images.encode(images.two_tone((2000, 1500)), "JPEG"))
    response = deliver(client, "u/photo.jpg", ["resize", "webp", "thumbnail"], targetWidth=1024)
    assert response.status_code == 200, response.get_json()
    outputs = response.get_json()["outputs"]
    assert [(o["operation"], o["key"], o["width"], o["height"], o["format"]) for o in outputs] == [
        ("resize", "u/photo.jpg.w1024.webp", 1024, 768, "webp"),
        ("thumbnail", "u/photo.jpg.thumb256.webp", 256, 256, "webp"),
    ]
    for output in outputs:
        stored = opened(storage_root, output["key"])
        assert (stored.format, stored.size) == ("WEBP", (output["width"], output["height"]))
        assert output["bytes"] == (storage_root / output["key"]).stat().st_size


def test_resize_alone_keeps_the_source_format(client: DeliveryClient, storage_root: Path) -> None:
    """resize without webp writes the source format (PNG stays PNG, with its alpha)."""
    store(storage_root, "a.png", images.encode(images.two_tone((800, 400), "RGBA"), "PNG"))
    response = deliver(client, "a.png", ["resize"], targetWidth=200)
    assert response.status_code == 200, response.get_json()
    stored = opened(storage_root, "a.png.w200.png")
    assert (stored.format, stored.size, stored.mode) == ("PNG", (200, 100), "RGBA")


def test_webp_alone_converts_at_full_size(client: DeliveryClient, storage_root: Path) -> None:
    """webp alone converts the whole image to WebP without resizing it."""
    store(storage_root, "b.jpg", images.encode(images.two_tone((640, 480)), "JPEG"))
    response = deliver(client, "b.jpg", ["webp"])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["outputs"][0]["key"] == "b.jpg.full.webp"
    assert opened(storage_root, "b.jpg.full.webp").size == (640, 480)


def test_webp_input_is_accepted(client: DeliveryClient, storage_root: Path) -> None:
    """A WebP source is decoded and thumbnailed like any other."""
    store(storage_root, "c.webp", images.encode(images.two_tone((600, 300)), "WEBP"))
    response = deliver(client, "c.webp", ["thumbnail"])
    assert response.status_code == 200, response.get_json()
    assert opened(storage_root, "c.webp.thumb256.webp").size == (256, 256)


def test_exif_orientation_is_applied(client: DeliveryClient, storage_root: Path) -> None:
    """An image stored sideways (Orientation 6) comes out upright: portrait, red on top."""
    exif = images.exif_with_gps(orientation=6)
    store(storage_root, "d.jpg", images.encode(images.two_tone((400, 200)), "JPEG", exif=exif))
    response = deliver(client, "d.jpg", ["resize"], targetWidth=100)
    assert response.status_code == 200, response.get_json()
    stored = opened(storage_root, "d.jpg.w100.jpg").convert("RGB")
    assert stored.size == (100, 200)
    top, bottom = stored.getpixel((50, 20)), stored.getpixel((50, 180))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_icc_kept_and_gps_dropped(
    client: DeliveryClient, storage_root: Path, image_format: str
) -> None:
    """Outputs keep the source's ICC profile and carry no EXIF at all (no GPS, no camera)."""
    ext = image_format.lower()
    store(storage_root, f"e.{ext}", images.encode(images.two_tone((600, 400)), image_format))
    response = deliver(client, f"e.{ext}", ["resize", "thumbnail"], targetWidth=300)
    assert response.status_code == 200, response.get_json()
    for output in response.get_json()["outputs"]:
        stored = opened(storage_root, output["key"])
        assert stored.info.get("icc_profile") == images.SRGB_ICC
        assert "exif" not in stored.info
        assert ExifTags.IFD.GPSInfo not in stored.getexif()
        assert b"TestCam" not in (storage_root / output["key"]).read_bytes()


def test_never_upscales(client: DeliveryClient, storage_root: Path) -> None:
    """A small image keeps its size for resize and gives a smaller-than-256 thumbnail."""
    store(storage_root, "f.jpg", images.encode(images.two_tone((300, 120)), "JPEG"))
    response = deliver(client, "f.jpg", ["resize", "thumbnail"], targetWidth=1024)
    assert response.status_code == 200, response.get_json()
    sizes = [(o["width"], o["height"]) for o in response.get_json()["outputs"]]
    assert sizes == [(300, 120), (120, 120)]


def test_redelivery_overwrites_the_same_keys(client: DeliveryClient, storage_root: Path) -> None:
    """Delivering the same message twice writes the same keys, no duplicates."""
    store(storage_root, "g.jpg", images.encode(images.two_tone((500, 500)), "JPEG"))
    first = deliver(client, "g.jpg", ["resize", "thumbnail"], targetWidth=100).get_json()
    second = deliver(client, "g.jpg", ["resize", "thumbnail"], targetWidth=100).get_json()
    assert first == second
    assert sorted(p.name for p in storage_root.iterdir()) == [
        "g.jpg",
        "g.jpg.thumb256.jpg",
        "g.jpg.w100.jpg",
    ]


def test_phone_sized_jpeg_is_decoded_at_reduced_scale(
    client: DeliveryClient, storage_root: Path
) -> None:
    """A 200 MP JPEG passes the default pixel limit because draft() decodes it at 1/8."""
    big = Image.new("L", (16320, 12240), 128)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=50)
    del big
    store(storage_root, "h.jpg", buffer.getvalue())
    response = deliver(client, "h.jpg", ["resize", "thumbnail"], targetWidth=1024)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["outputs"][0]["width"] == 1024


def test_png_bomb_is_refused_before_decoding(client: DeliveryClient, storage_root: Path) -> None:
    """A PNG declaring 50,000 x 50,000 pixels is a 489 naming the pixel limit."""
    store(storage_root, "bomb.png", images.png_header_bomb())
    response = deliver(client, "bomb.png", ["thumbnail"])
    assert response.status_code == 489
    assert "IMAGE_MAX_PIXELS" in response.get_json()["message"]


def test_pixel_limit_counts_decoded_pixels(job_config: dict[str, Any], tmp_path: Path) -> None:
    """Under a 1 MP limit a 12 MP JPEG drafted to 1/4 passes, the same PNG does not."""
    app = make_app({**job_config, "IMAGE_MAX_PIXELS": 1_000_000}, tmp_path / "instance")
    client = DeliveryClient(app)
    root = Path(job_config["STORAGE_ROOT"])
    source = images.two_tone((4000, 3000))
    store(root, "p.jpg", images.encode(source, "JPEG"))
    store(root, "p.png", images.encode(source, "PNG"))
    assert deliver(client, "p.jpg", ["resize"], targetWidth=400).status_code == 200
    assert deliver(client, "p.png", ["resize"], targetWidth=400).status_code == 489


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"%PDF-1.7 definitely not an image", "not a JPEG, PNG or WebP"),
        (images.encode(images.two_tone((800, 600)), "JPEG")[:3000], "truncated"),
        (b"", "not a JPEG, PNG or WebP"),
    ],
    ids=["not-an-image", "truncated-jpeg", "empty"],
)
def test_bad_files_are_non_retryable(
    client: DeliveryClient, storage_root: Path, data: bytes, message: str
) -> None:
    """Non-image, truncated and empty files are a 489 with a clear message."""
    store(storage_root, "bad.jpg", data)
    response = deliver(client, "bad.jpg", ["thumbnail"])
    assert response.status_code == 489
    assert message in response.get_json()["message"]


def test_too_many_bytes_is_non_retryable(job_config: dict[str, Any], tmp_path: Path) -> None:
    """A file over IMAGE_MAX_BYTES is refused without being read."""
    app = make_app({**job_config, "IMAGE_MAX_BYTES": 1000}, tmp_path / "instance")
    root = Path(job_config["STORAGE_ROOT"])
    store(root, "big.jpg", images.encode(images.two_tone((800, 600)), "JPEG"))
    response = deliver(DeliveryClient(app), "big.jpg", ["thumbnail"])
    assert response.status_code == 489
    assert "IMAGE_MAX_BYTES" in response.get_json()["message"]


def test_missing_file_is_retried_later(client: DeliveryClient, storage_root: Path) -> None:
    """A file not yet in storage answers 503 with Retry-After."""
    response = deliver(client, "later/upload.jpg", ["thumbnail"])
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    "key", ["../secret.jpg", "/etc/passwd", "a/../../b.jpg", "a//b.jpg", "C:/x.jpg", "a\\b.jpg"]
)
def test_unsafe_keys_are_refused(client: DeliveryClient, storage_root: Path, key: str) -> None:
    """Keys with '..', absolute paths or odd separators are a 489 naming fileKey."""
    response = deliver(client, key, ["thumbnail"])
    assert response.status_code == 489
    assert "fileKey" in response.get_json()["errors"]


def test_symlink_escaping_the_root_is_refused(
    client: DeliveryClient, storage_root: Path, tmp_path: Path
) -> None:
    """A key that reaches outside the root through a symlink is refused, not read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(images.encode(images.two_tone((64, 64)), "JPEG"))
    (storage_root / "link").symlink_to(outside)
    response = deliver(client, "link/x.jpg", ["thumbnail"])
    assert response.status_code == 489
    assert not (outside / "x.jpg.thumb256.jpg").exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"fileKey": "a.jpg", "userId": "u", "operations": ["rotate"]}, "operations"),
        ({"fileKey": "a.jpg", "userId": "u", "operations": []}, "operations"),
        ({"fileKey": "a.jpg", "operations": ["webp"]}, "userId"),
        (
            {"fileKey": "a.jpg", "userId": "u", "operations": ["resize"], "targetWidth": 0},
            "targetWidth",
        ),
    ],
)
def test_invalid_payloads_name_the_field(
    client: DeliveryClient, payload: dict[str, Any], field: str
) -> None:
    """Each invalid payload is a 489 whose errors name the offending field."""
    response = client.deliver("process-image", payload)
    assert response.status_code == 489
    assert field in response.get_json()["errors"]


def _encoded(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "mode"),
    [
        ("cmyk.jpg", _encoded(Image.new("CMYK", (400, 300), (0, 255, 255, 0)), "JPEG"), "RGB"),
        ("gray.jpg", _encoded(Image.new("L", (400, 300), 90), "JPEG"), "L"),
        ("p.png", _encoded(Image.new("P", (400, 300), 3), "PNG", transparency=3), "RGBA"),
        ("la.png", _encoded(Image.new("LA", (400, 300), (90, 128)), "PNG"), "RGBA"),
        ("i16.png", _encoded(Image.new("I;16", (400, 300), 4000), "PNG"), "RGB"),
    ],
)
def test_uncommon_modes_are_normalised(
    client: DeliveryClient, storage_root: Path, name: str, data: bytes, mode: str
) -> None:
    """CMYK, greyscale, palette, grey+alpha and 16-bit sources all give readable outputs."""
    store(storage_root, name, data)
    response = deliver(client, name, ["resize"], targetWidth=200)
    assert response.status_code == 200, response.get_json()
    stored = opened(storage_root, response.get_json()["outputs"][0]["key"])
    assert (stored.size, stored.mode) == ((200, 150), mode)


def test_damaged_header_is_non_retryable(client: DeliveryClient, storage_root: Path) -> None:
    """A JPEG whose APP1 segment claims more bytes than the file has is a 489."""
    data = images.encode(images.two_tone((64, 64)), "JPEG")
    app1 = data.index(b"\xff\xe1")
    store(storage_root, "hdr.jpg", data[: app1 + 4] + b"\xff\xff" + data[app1 + 6 : app1 + 40])
    response = deliver(client, "hdr.jpg", ["thumbnail"])
    assert response.status_code == 489


def test_invalid_orientation_is_ignored(client: DeliveryClient, storage_root: Path) -> None:
    """An out-of-range EXIF orientation leaves the image as stored instead of failing."""
    exif = images.exif_with_gps(orientation=9)
    store(storage_root, "o9.jpg", images.encode(images.two_tone((400, 200)), "JPEG", exif=exif))
    response = deliver(client, "o9.jpg", ["resize"], targetWidth=100)
    assert response.status_code == 200, response.get_json()
    assert opened(storage_root, "o9.jpg.w100.jpg").size == (100, 50)


def test_too_wide_for_webp_is_non_retryable(client: DeliveryClient, storage_root: Path) -> None:
    """WebP holds at most 16383 px a side: a wider full-size conversion is a clear 489."""
    store(storage_root, "wide.png", images.encode(Image.new("RGB", (17000, 8)), "PNG"))
    response = deliver(client, "wide.png", ["webp"])
    assert response.status_code == 489
    assert "16383" in response.get_json()["message"]


# --- Decompression bombs, decided from the header before any pixel is decoded ----------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (images.jpeg(32000, 32000, sof=0xFFC2), "32000x32000 progressive JPEG"),
        (images.jpeg(16000, 16000, sof=0xFFC2, truncate=True), "16000x16000 progressive JPEG"),
        (images.jpeg(9000, 9000, components=3, interleaved=False), "multi-scan JPEG"),
        (images.webp_lossless(7071, 7071), "7071x7071 WebP"),
    ],
    ids=["progressive-32000", "progressive-16000-header", "multi-scan-9000", "webp-50mp"],
)
def test_decoder_memory_bombs_are_refused(
    client: DeliveryClient, storage_root: Path, data: bytes, kind: str
) -> None:
    """Files whose decoder would hold 0.5 to 2 GB are a 489 naming the memory they need.

    A progressive JPEG (or one whose components are in separate scans) makes libjpeg
    keep every coefficient of the full image whatever draft() asks; a lossless WebP of
    one colour declares 50 MP in 28 bytes. test_image_memory measures what they cost.
    """
    store(storage_root, "bomb.jpg", data)
    response = deliver(client, "bomb.jpg", ["thumbnail"])
    assert response.status_code == 489, response.get_json()
    message = response.get_json()["message"]
    assert kind in message and "bytes of memory" in message and "IMAGE_MAX_PIXELS" in message
    assert [p.name for p in storage_root.iterdir()] == ["bomb.jpg"]


def test_progressive_jpeg_within_the_budget_is_decoded(
    client: DeliveryClient, storage_root: Path
) -> None:
    """A real progressive 12 MP photo needs far less than the budget and is processed."""
    photo = images.two_tone((4000, 3000))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", progressive=True, quality=80)
    store(storage_root, "prog.jpg", buffer.getvalue())
    response = deliver(client, "prog.jpg", ["resize", "thumbnail"], targetWidth=800)
    assert response.status_code == 200, response.get_json()
    assert [(o["width"], o["height"]) for o in response.get_json()["outputs"]] == [
        (800, 600),
        (256, 256),
    ]


def _with_junk(jpeg: bytes, count: int) -> bytes:
    """Return ``jpeg`` with ``count`` zero bytes between two of its segments."""
    frame = jpeg.index(b"\xff\xc0")
    return jpeg[:frame] + bytes(count) + jpeg[frame:]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (images.jpeg(64, 64, sof=0xFFC3), "lossless and hierarchical JPEGs are not supported"),
        (images.jpeg(64, 64, sof=0xFFC5), "lossless and hierarchical JPEGs are not supported"),
        (images.jpeg(64, 64, sof=0xFFC2, scans=101), "101 scans, more than 100"),
        (images.jpeg(0, 64), "empty image"),
        (images.jpeg(64, 64, components=2), "2 components"),
        (images.jpeg(64, 64, sampling=0x51), "invalid sampling factors"),
        (b"\xff\xd8" + b"\xff\xfe\x00\x02" * 100_001, "more than 100000 segments"),
        (_with_junk(images.jpeg(8, 8), 70_000), "outside any segment"),
        (images.jpeg(8, 8)[:30], "truncated"),
        (images.gif(100, 100), "not a JPEG, PNG or WebP"),
        (images.png(64, 64, depth=3), "invalid bit depth 3"),
        (images.png(0, 64), "invalid size 0x64"),
        (b"\x89PNG\r\n\x1a\n" + b"\0\0\0\0IDAT\0\0\0\0" * 100_001, "IHDR"),
    ],
    ids=[
        "lossless",
        "hierarchical",
        "too-many-scans",
        "empty",
        "two-components",
        "bad-sampling",
        "too-many-segments",
        "junk",
        "truncated-header",
        "gif",
        "png-bit-depth",
        "png-empty",
        "png-no-ihdr",
    ],
)
def test_headers_the_decoders_would_mishandle_are_refused(
    client: DeliveryClient, storage_root: Path, data: bytes, message: str
) -> None:
    """Coding processes, sizes and structures outside the memory model are clear 489s."""
    store(storage_root, "odd.img", data)
    response = deliver(client, "odd.img", ["thumbnail"])
    assert response.status_code == 489, response.get_json()
    assert message in response.get_json()["message"]


def test_a_png_with_too_many_chunks_is_refused(client: DeliveryClient, storage_root: Path) -> None:
    """100,001 chunks (Pillow reads each in Python: seconds of CPU) are refused up front."""
    data = images.png(8, 8)
    iend = data.rindex(b"\0\0\0\0IEND")
    store(storage_root, "chunks.png", data[:iend] + b"\0\0\0\0abCd\0\0\0\0" * 100_000 + data[iend:])
    response = deliver(client, "chunks.png", ["thumbnail"])
    assert response.status_code == 489
    assert "more than 100000 chunks" in response.get_json()["message"]


def test_pillows_process_wide_limit_is_left_alone() -> None:
    """Importing the job leaves Image.MAX_IMAGE_PIXELS at Pillow's default for everyone."""
    script = "from PIL import Image; print(Image.MAX_IMAGE_PIXELS)"
    default = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    import jobs.image  # noqa: F401 - imported by the app already; the import is the point

    assert str(Image.MAX_IMAGE_PIXELS) == default
    assert Image.MAX_IMAGE_PIXELS is not None


def test_pillows_own_limit_is_a_clear_refusal(job_config: dict[str, Any], tmp_path: Path) -> None:
    """With IMAGE_MAX_PIXELS above Pillow's own WebP limit, Pillow's refusal is a 489."""
    app = make_app({**job_config, "IMAGE_MAX_PIXELS": 600_000_000}, tmp_path / "instance")
    root = Path(job_config["STORAGE_ROOT"])
    store(root, "huge.webp", images.webp_lossless(16383, 11000))  # 180 MP, in 28 bytes
    response = deliver(DeliveryClient(app), "huge.webp", ["thumbnail"])
    assert response.status_code == 489, response.get_json()
    assert "MAX_IMAGE_PIXELS" in response.get_json()["message"]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("anim.png", images.png(300, 200, colour=6, frames=50)),
        ("anim.webp", images.webp_canvas(300, 200, animated=True)),
    ],
)
def test_animations_give_their_first_frame(
    client: DeliveryClient, storage_root: Path, name: str, data: bytes
) -> None:
    """Animated PNG and WebP are processed from their first frame, at the canvas size."""
    store(storage_root, name, data)
    response = deliver(client, name, ["resize"], targetWidth=150)
    assert response.status_code == 200, response.get_json()
    stored = opened(storage_root, response.get_json()["outputs"][0]["key"])
    assert stored.size == (150, 100)
    assert getattr(stored, "n_frames", 1) == 1


# --- Output keys: one per input key and operation, never outside the root --------------


def test_inputs_differing_only_by_extension_keep_their_own_outputs(
    client: DeliveryClient, storage_root: Path
) -> None:
    """c/photo.jpg and c/photo.png converted to WebP write two files, neither overwritten."""
    store(storage_root, "c/photo.jpg", images.encode(images.two_tone((640, 480)), "JPEG"))
    store(storage_root, "c/photo.png", images.encode(images.two_tone((300, 100)), "PNG"))
    first = deliver(client, "c/photo.jpg", ["webp"]).get_json()["outputs"][0]["key"]
    second = deliver(client, "c/photo.png", ["webp"]).get_json()["outputs"][0]["key"]
    assert (first, second) == ("c/photo.jpg.full.webp", "c/photo.png.full.webp")
    assert opened(storage_root, first).size == (640, 480)
    assert opened(storage_root, second).size == (300, 100)


def test_an_output_key_that_is_a_link_out_of_the_root_is_refused(
    client: DeliveryClient, storage_root: Path, tmp_path: Path
) -> None:
    """An output path planted as a symlink to a file outside is a 489; the file is intact."""
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"not yours")
    store(storage_root, "o.jpg", images.encode(images.two_tone((300, 300)), "JPEG"))
    (storage_root / output_key("o.jpg", "thumb256", "JPEG")).symlink_to(outside)
    response = deliver(client, "o.jpg", ["thumbnail"])
    assert response.status_code == 489, response.get_json()
    assert "symbolic link" in response.get_json()["message"]
    assert outside.read_bytes() == b"not yours"


def test_an_output_key_that_is_a_folder_is_refused(
    client: DeliveryClient, storage_root: Path
) -> None:
    """A folder where an output goes is a 489 naming it, not a 500."""
    store(storage_root, "f.jpg", images.encode(images.two_tone((300, 300)), "JPEG"))
    (storage_root / output_key("f.jpg", "w100", "JPEG")).mkdir()
    response = deliver(client, "f.jpg", ["resize"], targetWidth=100)
    assert response.status_code == 489, response.get_json()
    assert "is a folder" in response.get_json()["message"]


def test_a_file_key_leaving_no_room_for_output_keys_is_refused(
    client: DeliveryClient, storage_root: Path
) -> None:
    """A file name so long that its outputs' names would exceed 255 characters is a 489."""
    name = "x" * 240 + ".jpg"
    store(storage_root, name, images.encode(images.two_tone((64, 64)), "JPEG"))
    response = deliver(client, name, ["thumbnail"])
    assert response.status_code == 489, response.get_json()
    assert "fileKey" in response.get_json()["errors"]
    assert [p.name for p in storage_root.iterdir()] == [name]
