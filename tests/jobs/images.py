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


# --- Crafted headers: tiny files that declare what an attacker chooses ------------------


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


#: Every quantiser 1. Huffman tables: DC 0 and AC 0 each hold one 1-bit code, for
#: "difference 0" and "end of band" (sequential) or EOBRUN 2^14 + 14 bits (progressive).
_DQT = _segment(0xFFDB, b"\x00" + b"\x01" * 64)


def _dht(progressive: bool) -> bytes:
    one_code = bytes([1] + [0] * 15)
    ac_symbol = b"\xe0" if progressive else b"\x00"
    return _segment(0xFFC4, b"\x00" + one_code + b"\x00" + b"\x10" + one_code + ac_symbol)


def jpeg(
    width: int,
    height: int,
    *,
    components: int = 1,
    sof: int = 0xFFC0,
    sampling: int = 0x11,
    interleaved: bool = True,
    scans: int = 1,
    truncate: bool = False,
) -> bytes:
    """Return a JPEG of mid-grey 8x8 blocks whose every block costs 1 or 2 bits.

    ``sof`` picks the coding process (0xFFC2: progressive). A progressive file has a DC
    scan, then ``scans - 1`` AC scans of end-of-band runs; a sequential one has one scan
    of all components (``interleaved``) or one scan per component. ``truncate`` drops the
    entropy-coded data: the header alone, as a decoder sees it first.
    """
    progressive = sof in (0xFFC2, 0xFFC6, 0xFFCA, 0xFFCE)
    frame = struct.pack(">BHHB", 8, height, width, components)
    frame += b"".join(bytes([i + 1, sampling if i == 0 else 0x11, 0]) for i in range(components))
    out = b"\xff\xd8" + _DQT + _segment(sof, frame) + _dht(progressive)
    h, v = max(1, sampling >> 4), max(1, sampling & 15)  # 0 is invalid: keep sizes finite
    mcus = -(-width // (8 * h)) * -(-height // (8 * v))
    blocks_per_mcu = h * v + components - 1
    if progressive:
        ids = b"".join(bytes([i + 1, 0]) for i in range(components))
        out += _segment(0xFFDA, bytes([components]) + ids + b"\x00\x00\x00")
        out += b"" if truncate else bytes(-(-mcus * blocks_per_mcu // 8))
        luma_blocks = -(-width // 8) * -(-height // 8)
        runs = -(-luma_blocks // 32767)
        for _ in range(scans - 1):
            out += _segment(0xFFDA, b"\x01\x01\x00\x01\x3f\x00")
            out += b"" if truncate else _bits([(0, 1), (16383, 14)] * runs)
    elif interleaved:
        ids = b"".join(bytes([i + 1, 0]) for i in range(components))
        out += _segment(0xFFDA, bytes([components]) + ids + b"\x00\x3f\x00")
        out += b"" if truncate else bytes(-(-mcus * blocks_per_mcu * 2 // 8))
    else:
        for i in range(components):
            out += _segment(0xFFDA, bytes([1, i + 1, 0]) + b"\x00\x3f\x00")
            out += b"" if truncate else bytes(-(-width // 8) * -(-height // 8) * 2 // 8 + 1)
    return out + b"\xff\xd9"


def _bits(codes: list[tuple[int, int]]) -> bytes:
    """Pack (value, bit count) codes MSB first, 0xFF stuffed, padded with 1 bits."""
    value, count = 0, 0
    for code, bits in codes:
        value, count = (value << bits) | code, count + bits
    pad = -count % 8
    packed = ((value << pad) | ((1 << pad) - 1)).to_bytes((count + pad) // 8, "big")
    return packed.replace(b"\xff", b"\xff\x00")


def png(
    width: int,
    height: int,
    *,
    depth: int = 8,
    colour: int = 2,
    interlace: int = 0,
    frames: int = 1,
    pixel_rows: int | None = None,
) -> bytes:
    """Return a PNG of zero pixels declaring what it is told, IDAT made row by row.

    ``pixel_rows`` limits the rows actually encoded (default: all of them, for images of
    up to 16 MiB of rows; none beyond, keeping the file tiny): a short IDAT is a truncated
    file.
    ``frames`` > 1 adds an acTL chunk and that many fcTL + IDAT/fdAT frames.
    """
    bands = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
    passes = _ADAM7 if interlace else [(0, 0, 1, 1)]
    widths = [
        (row_bytes, rows) for row_bytes, rows in _pass_rows(width, height, passes, bands * depth)
    ]
    raw = sum(row_bytes * rows for row_bytes, rows in widths)
    limit = pixel_rows if pixel_rows is not None else (height if raw <= 1 << 24 else 0)
    compressor, parts = zlib.compressobj(), []
    for row_bytes, rows in widths:
        for _ in range(min(rows, limit)):
            parts.append(compressor.compress(bytes(row_bytes)))
        limit -= min(rows, limit)
    idat = b"".join(parts) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    chunks = [_chunk(b"IHDR", ihdr)]
    if colour == 3:
        chunks.append(_chunk(b"PLTE", b"\x80\x80\x80"))
    if frames > 1:
        chunks.append(_chunk(b"acTL", struct.pack(">II", frames, 0)))
    for index in range(frames):
        if frames > 1:
            fctl = struct.pack(">IIIIIHHBB", 2 * index, width, height, 0, 0, 1, 10, 0, 0)
            chunks.append(_chunk(b"fcTL", fctl))
        if index == 0:
            chunks.append(_chunk(b"IDAT", idat))
        else:
            chunks.append(_chunk(b"fdAT", struct.pack(">I", 2 * index + 1) + idat))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _chunk(b"IEND", b"")


#: Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def _pass_rows(
    width: int, height: int, passes: list[tuple[int, int, int, int]], bits: int
) -> list[tuple[int, int]]:
    """Return (bytes per row with its filter byte, rows) of each non-empty pass."""
    sizes = []
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            sizes.append((1 + -(-columns * bits // 8), rows))
    return sizes


def webp_lossless(width: int, height: int) -> bytes:
    """Return a lossless WebP of one colour: 8 bytes of bitstream whatever the size.

    VP8L header, no transform, no colour cache, no meta codes, then five prefix codes of
    one symbol each ("simple", 1 symbol, 1-bit symbol 0): every pixel costs 0 bits.
    """
    bits = 0x2F | (width - 1) << 8 | (height - 1) << 22  # + alpha 0, version 0
    bits |= 0b0001_0001_0001_0001_0001 << 43  # 3 zero bits (no transform, cache, meta)
    stream = bits.to_bytes(8, "little")
    chunk = b"VP8L" + struct.pack("<I", len(stream)) + stream
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_canvas(width: int, height: int, *, animated: bool = False) -> bytes:
    """Return an extended (VP8X) WebP declaring a canvas, with one 1x1 lossless frame.

    libwebp refuses a still image smaller than its canvas: only ``animated`` decodes.
    """
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "WEBP", lossless=True)
    frame = buffer.getvalue()[12:]  # the VP8L chunk
    flags = 0x02 if animated else 0
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([flags, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    if animated:
        anim = b"ANIM" + struct.pack("<I", 6) + b"\0\0\0\0\0\0"
        anmf = b"\0" * 6 + b"\0\0\0" + b"\0\0\0" + b"\x01\x00\x00" + b"\0"
        body = vp8x + anim + b"ANMF" + struct.pack("<I", len(anmf) + len(frame)) + anmf + frame
    else:
        body = vp8x + frame
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def gif(width: int, height: int) -> bytes:
    """Return a GIF whose logical screen is ``width`` x ``height`` (not an accepted format)."""
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + image + b";"
