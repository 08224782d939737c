"""Real image files for the process-image tests, made with Pillow."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import ExifTags, Image, ImageCms

SRGB_ICC: bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    """Return EXIF carrying an orientation and a GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    return exif


def two_tone(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Return an image whose left half is red and right half blue."""
    image = Image.new(mode, size, (255, 0, 0, 255)[: len(mode)])
    image.paste((0, 0, 255, 255)[: len(mode)], (size[0] // 2, 0, size[0], size[1]))
    return image


def encode(
    image: Image.Image, image_format: str, *, exif: Image.Exif | None = None, icc: bool = True
) -> bytes:
    """Encode ``image`` with EXIF (GPS included) and the sRGB ICC profile."""
    options: dict[str, object] = {"exif": (exif or exif_with_gps()).tobytes()}
    if icc:
        options["icc_profile"] = SRGB_ICC
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """Return a tiny PNG that declares ``width`` x ``height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )
