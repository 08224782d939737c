"""What decoding an image would cost, read from its header before any pixel is decoded.

``read_header(data)`` walks a JPEG's marker segments up to its first scan, a PNG's chunks
or a WebP's RIFF chunks, and returns a ``Header``: format, stored size, the memory its
decoder holds for a given decoded size (``decode_bytes``), and frame count. Anything the
decoders would handle slowly or in ways the estimate does not cover is refused here with
``HeaderError``, a clear message for a 489:

* JPEG: lossless and hierarchical coding (libjpeg-turbo decodes lossless JPEG at full
  size whatever ``draft()`` asks), bit depths other than 8, zero sizes, more than
  ``MAX_JPEG_SCANS`` scans (each scan is one more pass over every coefficient), more than
  ``MAX_SEGMENTS`` marker segments before the first scan or ``MAX_JUNK`` stray bytes
  between them (Pillow parses those one by one in Python).
* PNG and WebP: more than ``MAX_SEGMENTS`` chunks (Pillow handles PNG chunks one by one
  in Python; libwebp allocates one record per animation frame).

The memory model, measured with libjpeg-turbo 3.2, libwebp 1.6 and Pillow 13 (Pillow
keeps 1 byte per pixel for L and P, 2 for I;16, 4 for every other mode):

* JPEG: the decoded (drafted) pixels, plus, when the file has more than one scan
  (progressive, or components in separate scans), every DCT coefficient of the *full*
  image: libjpeg buffers them all before the first output row, 128 bytes per 8x8 block
  and component, whatever scale ``draft()`` chose.
* PNG: the decoded pixels (zlib inflates row by row, so a zlib bomb costs no more).
* WebP: 16 bytes per canvas pixel: libwebp's two RGBA canvases, Pillow's copy of the
  frame as bytes and the image itself.

Animated PNG and WebP: only the first frame is decoded, so frames add no pixel memory.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

#: Scans a JPEG may have; libjpeg-turbo's own fuzzers cap at 100 (real files: 1 to ~20).
MAX_JPEG_SCANS = 100
#: Marker segments before a JPEG's first scan, or chunks of a PNG / WebP (real files have
#: tens; a PNG writing 8 KiB IDAT chunks needs 6,400 for 50 MB).
MAX_SEGMENTS = 100_000
#: Bytes between JPEG segments that belong to none (libjpeg skips them with a warning).
MAX_JUNK = 65_536
#: libwebp's two RGBA canvases + Pillow's bytes copy of the frame + the image: 4 x 4.
WEBP_BYTES_PER_PIXEL = 16
#: One 8x8 block of 16-bit DCT coefficients.
_BLOCK_BYTES = 64 * 2

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour type → bands; bit depths each allows.
_PNG_BANDS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_MAX_SIDE = 2**31 - 1
#: JPEG frame markers libjpeg-turbo decodes with DCT scaling: baseline, extended,
#: progressive (Huffman), extended and progressive (arithmetic).
_JPEG_DCT_FRAMES = {0xC0: False, 0xC1: False, 0xC2: True, 0xC9: False, 0xCA: True}
_JPEG_OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xCB, 0xCD, 0xCE, 0xCF, 0xDE}
#: TEM and RST0-7 stand alone; 0x00 after 0xFF is a stuffed byte, not a marker.
_JPEG_STANDALONE = {0x00, 0x01, *range(0xD0, 0xD8)}
_SOS, _EOI = 0xDA, 0xD9


class HeaderError(ValueError):
    """The header is malformed, unsupported, or asks for more than the limits allow."""


@dataclass(frozen=True)
class Header:
    """What an image's header says decoding it will take."""

    format: str
    size: tuple[int, int]
    #: Bytes the decoder holds per decoded pixel (the image as Pillow keeps it, and more).
    pixel_bytes: int
    #: Bytes held whatever the decoded size: a multi-scan JPEG's coefficient buffer.
    fixed_bytes: int = 0
    frames: int = 1
    #: What the file is, for messages: "PNG", "progressive JPEG"…
    kind: str = ""

    def decode_bytes(self, decoded: tuple[int, int]) -> int:
        """Return the bytes the decoder holds to decode the image at the ``decoded`` size."""
        return self.fixed_bytes + decoded[0] * decoded[1] * self.pixel_bytes


def read_header(data: bytes) -> Header:
    """Return the header of a JPEG, PNG or WebP image; raise ``HeaderError`` otherwise."""
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg(data)
    if data.startswith(_PNG_SIGNATURE):
        return _png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    raise HeaderError("the file is not a JPEG, PNG or WebP image")


@dataclass(frozen=True)
class _Frame:
    """A JPEG frame header (SOF segment)."""

    size: tuple[int, int]
    components: int
    progressive: bool
    coefficient_bytes: int


def _jpeg(data: bytes) -> Header:
    pos, segments, junk = 2, 0, 0
    frame: _Frame | None = None
    while True:
        start = data.find(b"\xff", pos)
        if start < 0:
            raise HeaderError("the JPEG has no image data (no scan)")
        junk += start - pos
        if junk > MAX_JUNK:
            raise HeaderError(f"the JPEG has more than {MAX_JUNK} bytes outside any segment")
        pos = start
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            raise HeaderError("the JPEG has no image data (no scan)")
        marker, pos = data[pos], pos + 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == _EOI:
            raise HeaderError("the JPEG has no image data (no scan)")
        segments += 1
        if segments > MAX_SEGMENTS:
            raise HeaderError(f"the JPEG has more than {MAX_SEGMENTS} segments before its scan")
        payload, pos = _segment(data, pos)
        if marker == _SOS:
            if frame is None:
                raise HeaderError("the JPEG has a scan before its frame header")
            return _jpeg_scans(data, pos, frame, payload)
        if marker in _JPEG_DCT_FRAMES or marker in _JPEG_OTHER_FRAMES:
            if frame is not None:
                raise HeaderError("the JPEG has more than one frame header")
            frame = _jpeg_frame(marker, payload)


def _segment(data: bytes, pos: int) -> tuple[bytes, int]:
    """Return a marker segment's payload and the position after it."""
    if pos + 2 > len(data):
        raise HeaderError("the JPEG header is truncated")
    (length,) = struct.unpack_from(">H", data, pos)
    if length < 2 or pos + length > len(data):
        raise HeaderError("the JPEG header is truncated or has a bad segment length")
    return data[pos + 2 : pos + length], pos + length


def _jpeg_frame(marker: int, payload: bytes) -> _Frame:
    if marker not in _JPEG_DCT_FRAMES:
        raise HeaderError("lossless and hierarchical JPEGs are not supported")
    if len(payload) < 6:
        raise HeaderError("the JPEG frame header is truncated")
    precision, height, width, count = struct.unpack_from(">BHHB", payload)
    if precision != 8:
        raise HeaderError(f"{precision}-bit JPEGs are not supported (8-bit only)")
    if count not in (1, 3, 4) or len(payload) != 6 + 3 * count:
        raise HeaderError(f"JPEGs with {count} components are not supported (1, 3 or 4)")
    if width == 0 or height == 0:
        raise HeaderError("the JPEG declares an empty image")
    sampling = [(payload[i] >> 4, payload[i] & 15) for i in range(7, 6 + 3 * count, 3)]
    if not all(1 <= h <= 4 and 1 <= v <= 4 for h, v in sampling):
        raise HeaderError("the JPEG has invalid sampling factors")
    coefficients = _coefficient_bytes((width, height), sampling)
    return _Frame((width, height), count, _JPEG_DCT_FRAMES[marker], coefficients)


def _coefficient_bytes(size: tuple[int, int], sampling: list[tuple[int, int]]) -> int:
    """Return the bytes of libjpeg's whole-image coefficient buffer (jdcoefct.c)."""
    max_h = max(h for h, _ in sampling)
    max_v = max(v for _, v in sampling)
    blocks = 0
    for h, v in sampling:
        columns = math.ceil(size[0] * h / (max_h * 8))
        rows = math.ceil(size[1] * v / (max_v * 8))
        blocks += math.ceil(columns / h) * h * math.ceil(rows / v) * v
    return blocks * _BLOCK_BYTES


def _jpeg_scans(data: bytes, pos: int, frame: _Frame, scan: bytes) -> Header:
    """Return the header, from the frame, the first scan header and the scan count."""
    if not scan or not 1 <= scan[0] <= frame.components:
        raise HeaderError("the JPEG scan header is malformed")
    # Entropy-coded data never holds 0xFF 0xDA (a data 0xFF is followed by 0x00).
    scans = 1 + data.count(b"\xff\xda", pos)
    if scans > MAX_JPEG_SCANS:
        raise HeaderError(f"the JPEG has {scans} scans, more than {MAX_JPEG_SCANS}")
    # libjpeg buffers the whole image when the first scan leaves components out (jdinput.c).
    if frame.progressive:
        kind, fixed = "progressive JPEG", frame.coefficient_bytes
    elif scan[0] < frame.components:
        kind, fixed = "multi-scan JPEG", frame.coefficient_bytes
    else:
        kind, fixed = "JPEG", 0
    # Pillow keeps greyscale in 1 byte per pixel, RGB and CMYK in 4.
    pixel_bytes = 1 if frame.components == 1 else 4
    return Header("JPEG", frame.size, pixel_bytes, fixed, kind=kind)


def _png(data: bytes) -> Header:
    pos, chunks, frames = len(_PNG_SIGNATURE), 0, 1
    header: tuple[int, int, int] | None = None
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        pos = body + length + 4
        chunks += 1
        if chunks > MAX_SEGMENTS:
            raise HeaderError(f"the PNG has more than {MAX_SEGMENTS} chunks")
        if header is None:
            if kind != b"IHDR" or length != 13 or pos > len(data):
                raise HeaderError("the PNG does not start with a complete IHDR header")
            header = _png_ihdr(data[body : body + 13])
        elif kind == b"acTL" and length == 8 and pos <= len(data):
            frames = max(1, struct.unpack_from(">I", data, body)[0])
        elif kind == b"IEND":
            break
    if header is None:
        raise HeaderError("the PNG header is truncated")
    width, height, pixel_bytes = header
    return Header("PNG", (width, height), pixel_bytes, frames=frames, kind="PNG")


def _png_ihdr(body: bytes) -> tuple[int, int, int]:
    width, height, depth, colour = struct.unpack_from(">IIBB", body)
    if not (0 < width <= _PNG_MAX_SIDE and 0 < height <= _PNG_MAX_SIDE):
        raise HeaderError(f"the PNG declares an invalid size {width}x{height}")
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise HeaderError(f"the PNG has an invalid bit depth {depth} for colour type {colour}")
    bands = _PNG_BANDS[colour]
    return width, height, 4 if bands > 1 else 2 if depth == 16 else 1


def _webp(data: bytes) -> Header:
    pos, chunks, frames = 12, 0, 0
    size: tuple[int, int] | None = None
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8 : pos + 8 + min(length, 30)]
        pos += 8 + length + (length & 1)
        chunks += 1
        if chunks > MAX_SEGMENTS:
            raise HeaderError(f"the WebP has more than {MAX_SEGMENTS} chunks")
        if size is None:
            size = _webp_size(kind, body)
        if kind == b"ANMF":
            frames += 1
    if size is None:
        raise HeaderError("the WebP header is truncated or has no image chunk")
    return Header("WEBP", size, WEBP_BYTES_PER_PIXEL, frames=max(1, frames), kind="WebP")


def _webp_size(kind: bytes, body: bytes) -> tuple[int, int]:
    """Return the canvas size the first chunk declares (as libwebp reads it)."""
    if kind == b"VP8X" and len(body) >= 10:
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
        return width, height
    if kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", body, 6)
        if width & 0x3FFF and height & 0x3FFF:
            return width & 0x3FFF, height & 0x3FFF
    raise HeaderError("the WebP header is truncated or malformed")
