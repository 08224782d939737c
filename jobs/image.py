"""process-image: storage → one Pillow decode → resized / WebP / thumbnail outputs → storage.

Payload ``{fileKey, userId, operations: ["resize" | "webp" | "thumbnail"], targetWidth?}``:

* ``resize`` scales the image to ``targetWidth`` (aspect kept, never upscaled); ``webp``
  encodes that main output as WebP (alone: the full-size image as WebP); ``thumbnail``
  makes a centred square crop of 256 px (smaller only if the image is), in WebP when
  ``webp`` is asked for, else in the source format.
* One decode serves every output: JPEGs are decoded with ``draft()`` at the smallest
  1/2, 1/4 or 1/8 scale still large enough for them. EXIF orientation is applied, the ICC
  profile kept, every other metadata block (EXIF with GPS, XMP, text chunks) dropped.
* Outputs go to deterministic keys beside the input, named after the whole input key
  (``photos/a.jpg`` → ``photos/a.jpg.w1024.webp``, ``photos/a.jpg.thumb256.webp``): a
  redelivery overwrites them, and ``a.jpg`` and ``a.png`` never share an output.
* Bad input is a 489 with a clear message: more than ``IMAGE_MAX_PIXELS`` pixels to decode,
  a decoder that would hold more than ``DECODE_BYTES_PER_PIXEL`` bytes per such pixel
  (decompression bombs, progressive JPEGs: see ``jobs.image_header``), more than
  ``IMAGE_MAX_BYTES`` bytes, truncated or non-image data, an unsafe input or output key.
  A file not (yet) in storage is retried later.
* Pillow's process-wide ``Image.MAX_IMAGE_PIXELS`` keeps its default: this job opens the
  decoders directly, after the checks above, because Pillow's check runs on the declared
  size and would refuse a big JPEG that ``draft()`` decodes cheaply.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from flask import Flask, current_app
from marshmallow import Schema, ValidationError, fields, validate
from PIL import ExifTags, Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from app.delivery import Delivery
from app.errors import NonRetryableError, RetryLater
from app.jobs import job
from app.storage import (
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    Storage,
    storage_for,
    validate_key,
)
from jobs.image_header import Header, HeaderError, read_header

OPERATIONS = ("resize", "webp", "thumbnail")
#: The width ``resize`` makes when the payload has no ``targetWidth`` (optional in the seed).
DEFAULT_WIDTH = 1024
THUMBNAIL_SIZE = 256
#: The decoder of each accepted format, opened directly: ``Image.open`` would apply
#: Pillow's process-wide limit to the declared size, before ``draft()``.
_DECODERS: dict[str, type[ImageFile.ImageFile]] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
}
#: The memory a decoder may hold, per IMAGE_MAX_PIXELS pixel: 400 MB at the default.
DECODE_BYTES_PER_PIXEL = 8
#: Peak RSS rise of one image, all outputs included, per IMAGE_MAX_PIXELS pixel, on top of
#: the input's bytes (2.4 GB + IMAGE_MAX_BYTES at the defaults). Measured worst: 42, a
#: full-size WebP of an RGBA image whose alpha is noise (libwebp's lossless alpha encoder);
#: 24 with a smooth alpha, 12 to 19 for opaque images, 8 for a decoder at its budget.
PEAK_BYTES_PER_PIXEL = 48
#: format → (file extension, content type, encoder options)
ENCODINGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "JPEG": ("jpg", "image/jpeg", {"quality": 85}),
    "PNG": ("png", "image/png", {}),
    "WEBP": ("webp", "image/webp", {"quality": 80, "method": 4}),
}
RETRY_MISSING_AFTER = 30
# Pillow's own thumbnail() defaults: bicubic (antialiased), with a box reduce() first when
# shrinking by 2x the gap or more. Close to Lanczos in quality, ~30% faster here.
_RESAMPLE = Image.Resampling.BICUBIC
_REDUCING_GAP = 2.0
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
#: EXIF orientation → the transpose that makes the image upright (as ImageOps does).
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Largest side each encoder can write.
MAX_SIDE = {"JPEG": 65_500, "PNG": 2**31 - 1, "WEBP": 16_383}


def _safe_key(value: str) -> None:
    try:
        validate_key(value)
        # The longest output key must be a valid key too.
        validate_key(output_key(value, f"thumb{THUMBNAIL_SIZE}", "WEBP"))
    except InvalidKey as exc:
        raise ValidationError(str(exc)) from None


class ProcessImageSchema(Schema):
    """The process-image payload (camelCase on the wire)."""

    file_key = fields.String(required=True, data_key="fileKey", validate=_safe_key)
    user_id = fields.String(required=True, data_key="userId", validate=validate.Length(min=1))
    operations = fields.List(
        fields.String(validate=validate.OneOf(OPERATIONS)),
        required=True,
        validate=validate.Length(min=1),
    )
    # Optional, as in the seed's ImageJobPayload: resize without it makes DEFAULT_WIDTH.
    target_width = fields.Integer(
        data_key="targetWidth",
        load_default=DEFAULT_WIDTH,
        validate=validate.Range(min=1, max=16384),
    )


@dataclass(frozen=True)
class Output:
    """One stored output, as the job's response lists it."""

    operation: str
    key: str
    width: int
    height: int
    format: str
    bytes: int


def output_key(file_key: str, suffix: str, image_format: str) -> str:
    """Return the deterministic key of an output of ``file_key``, unique to that key."""
    return f"{file_key}.{suffix}.{ENCODINGS[image_format][0]}"


def _needed_size(
    size: tuple[int, int], operations: list[str], width: int | None
) -> tuple[int, int]:
    """Return the smallest (w, h), in display orientation, that every output can use."""
    w, h = size
    if "webp" in operations and "resize" not in operations:
        return size
    need_w = need_h = 1
    if "resize" in operations and width is not None:
        need_w = min(width, w)
        need_h = max(1, -(-h * need_w // w))
    if "thumbnail" in operations:
        side = min(THUMBNAIL_SIZE, w, h)
        short = min(w, h)
        need_w = max(need_w, -(-w * side // short))
        need_h = max(need_h, -(-h * side // short))
    return need_w, need_h


def _read_header(data: bytes) -> Header:
    try:
        return read_header(data)
    except HeaderError as exc:
        raise NonRetryableError(str(exc)) from None


def _open(data: bytes, header: Header) -> Image.Image:
    try:
        image = _DECODERS[header.format](io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # the WebP decoder checks Pillow's limit
        raise NonRetryableError(f"{exc} (Pillow's Image.MAX_IMAGE_PIXELS)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # a damaged header
        raise NonRetryableError(f"the image header is damaged: {exc}") from None
    if image.size != header.size:
        raise NonRetryableError(
            f"the image header is damaged: it declares {header.size[0]}x{header.size[1]}"
            f" pixels, its decoder reads {image.size[0]}x{image.size[1]}"
        )
    return image


def _check_cost(header: Header, size: tuple[int, int], max_pixels: int) -> None:
    """Refuse to decode ``size`` pixels of ``header``'s image beyond the configured limits."""
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise NonRetryableError(
            f"decoding this {size[0]}x{size[1]} image needs {pixels} pixels, more than"
            f" IMAGE_MAX_PIXELS ({max_pixels}): refusing a possible decompression bomb"
        )
    needed, budget = header.decode_bytes(size), max_pixels * DECODE_BYTES_PER_PIXEL
    if needed > budget:
        width, height = header.size
        raise NonRetryableError(
            f"decoding this {width}x{height} {header.kind} needs about {needed:,} bytes of"
            f" memory, more than the {budget:,} that IMAGE_MAX_PIXELS ({max_pixels}) allows"
            f" ({DECODE_BYTES_PER_PIXEL} bytes a pixel): refusing a possible decompression bomb"
        )


def orientation(image: Image.Image) -> int:
    """Return the EXIF orientation (1-8); 1 when absent, invalid or the EXIF is corrupt."""
    try:
        value = int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # corrupt metadata must not fail the job: Pillow raises many kinds
        return 1
    return value if value in _TRANSPOSES or value == 1 else 1


def _draft(image: Image.Image, operations: list[str], width: int | None, turn: int) -> None:
    """Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 where every output allows it."""
    swap = turn in _SWAPPING_ORIENTATIONS
    w, h = image.size
    display = (h, w) if swap else (w, h)
    need_w, need_h = _needed_size(display, operations, width)
    if (need_w, need_h) != display:
        image.draft(image.mode, (need_h, need_w) if swap else (need_w, need_h))


def decode(
    data: bytes, operations: list[str], width: int | None, *, max_pixels: int
) -> tuple[Image.Image, bytes | None, str]:
    """Decode once at the smallest useful scale; return (oriented image, ICC, format)."""
    header = _read_header(data)
    source_format = header.format
    if source_format != "JPEG":  # their decoded size is the declared one, known already
        _check_cost(header, header.size, max_pixels)
    image = _open(data, header)
    # For JPEG and WebP getexif() reads metadata open() already parsed (no pixel is
    # decoded); PNG may keep its eXIf chunk after the pixels, so it is read after load().
    turn = orientation(image) if source_format != "PNG" else 1
    if source_format == "JPEG":
        _draft(image, operations, width, turn)
        _check_cost(header, image.size, max_pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise NonRetryableError(f"the image is truncated or corrupt: {exc}") from None
    icc = image.info.get("icc_profile") or None
    if image.mode == "CMYK":
        icc = None  # a CMYK profile does not describe the RGB pixels we write
    if source_format == "PNG":
        turn = orientation(image)
    if turn in _TRANSPOSES:
        image = image.transpose(_TRANSPOSES[turn])
    return _normalise_mode(image), icc, source_format


def _normalise_mode(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA", "L"):
        return image
    has_alpha = image.mode in ("LA", "PA", "RGBa") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def resize(image: Image.Image, width: int) -> Image.Image:
    """Scale ``image`` to ``width`` keeping its aspect ratio; never upscale."""
    w, h = image.size
    if width >= w:
        return image
    size = (width, max(1, round(h * width / w)))
    return image.resize(size, _RESAMPLE, reducing_gap=_REDUCING_GAP)


def thumbnail(image: Image.Image, side: int = THUMBNAIL_SIZE) -> Image.Image:
    """Return the centred square crop of ``image`` scaled to ``side`` (never upscaled)."""
    w, h = image.size
    short = min(w, h)
    side = min(side, short)
    left, top = (w - short) // 2, (h - short) // 2
    box = (left, top, left + short, top + short)
    return image.resize((side, side), _RESAMPLE, box=box, reducing_gap=_REDUCING_GAP)


def encode(image: Image.Image, image_format: str, icc: bytes | None) -> bytes:
    """Encode ``image`` with only the ICC profile as metadata."""
    if max(image.size) > MAX_SIDE[image_format]:
        raise NonRetryableError(
            f"{image_format} cannot hold a {image.size[0]}x{image.size[1]} image (at most"
            f" {MAX_SIDE[image_format]} px a side): ask for resize with a smaller targetWidth"
        )
    if image_format == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    options = dict(ENCODINGS[image_format][2])
    if icc:
        options["icc_profile"] = icc
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


#: (operation, key suffix, a function returning the output's image, format) of an output.
Rendered = tuple[str, str, Callable[[], Image.Image], str]


def render(
    image: Image.Image, operations: list[str], width: int | None, source_format: str
) -> list[Rendered]:
    """Return each output the operations ask for; the thumbnail is made when called for.

    The main output is made now; the thumbnail only keeps its source, so that it is made
    beside the main output's encoding, and nothing keeps ``image`` once a resized main
    output can serve as that source.
    """
    target = "WEBP" if "webp" in operations else source_format
    outputs: list[Rendered] = []
    main = image
    if "resize" in operations and width is not None:
        main = resize(image, width)
        outputs.append(("resize", f"w{width}", lambda: main, target))
    elif "webp" in operations:
        outputs.append(("webp", "full", lambda: main, target))
    if "thumbnail" in operations:
        # The smaller main output is a cheaper, still large enough source.
        source = main if min(main.size) >= min(THUMBNAIL_SIZE, *image.size) else image
        suffix = f"thumb{THUMBNAIL_SIZE}"
        outputs.append(("thumbnail", suffix, functools.partial(thumbnail, source), target))
    return outputs


def _load_input(file_key: str) -> bytes:
    storage = storage_for(current_app)
    try:
        return storage.get(file_key, max_bytes=current_app.config["IMAGE_MAX_BYTES"])
    except ObjectNotFound:
        message = f"{file_key!r} is not in storage (yet)"
        raise RetryLater(message, after=RETRY_MISSING_AFTER) from None
    except ObjectTooLarge as exc:
        raise NonRetryableError(f"{exc} (IMAGE_MAX_BYTES)") from None
    except InvalidKey as exc:
        raise NonRetryableError(str(exc), errors={"fileKey": [str(exc)]}) from None


def _store(storage: Storage, file_key: str, icc: bytes | None, rendered: Rendered) -> Output:
    operation, suffix, make, image_format = rendered
    image = make()
    encoded = encode(image, image_format, icc)
    key = output_key(file_key, suffix, image_format)
    try:
        storage.put(key, encoded, content_type=ENCODINGS[image_format][1])
    except InvalidKey as exc:  # e.g. a link or a folder where the output goes
        raise NonRetryableError(f"cannot store the output: {exc}") from None
    return Output(operation, key, *image.size, image_format.lower(), len(encoded))


def process(payload: dict[str, Any]) -> list[Output]:
    """Run the pipeline for one payload and store every output."""
    file_key, width = payload["file_key"], payload["target_width"]
    operations = list(dict.fromkeys(payload["operations"]))
    data = _load_input(file_key)
    max_pixels = current_app.config["IMAGE_MAX_PIXELS"]
    image, icc, source_format = decode(data, operations, width, max_pixels=max_pixels)
    del data
    store = functools.partial(_store, storage_for(current_app), file_key, icc)
    rendered = render(image, operations, width, source_format)
    del image  # the decoded pixels go as soon as no output needs them
    # Resizing, encoders and storage writes release the GIL: each output is made, encoded
    # and written beside the other.
    with ThreadPoolExecutor(max_workers=len(rendered)) as pool:
        return list(pool.map(store, rendered))


def init_app(app: Flask) -> None:
    """Refuse to start with a STORAGE_URL that names no usable storage."""
    if app.config.get("STORAGE_URL"):
        storage_for(app)


@job(
    "process-image",
    schema=ProcessImageSchema,
    retries=2,
    queue="image-processing",
    parallelism=3,
)
def process_image(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
    """Resize, convert to WebP and thumbnail an image from storage."""
    outputs = process(payload)
    return {
        "fileKey": payload["file_key"],
        "userId": payload["user_id"],
        "outputs": [asdict(output) for output in outputs],
    }
