"""process-image against structured hostile headers: a clean 489 or a 200 within the bound.

Hypothesis builds JPEG frame and scan headers, PNG IHDR/acTL, WebP VP8L/VP8X and GIF
logical-screen headers with chosen sizes, bit depths, components, sampling, coding
process, scans and frames, then truncates or corrupts a byte of some. Whatever arrives,
the job answers 200 or 489 (never a 500), and the delivery's peak RSS stays within
PEAK_BYTES_PER_PIXEL per IMAGE_MAX_PIXELS pixel, plus the input and some slack.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.testing import DeliveryClient
from jobs.image import PEAK_BYTES_PER_PIXEL
from tests.jobs import images
from tests.jobs.conftest import make_app

LIMIT = 1_000_000
#: Python, the allocator and Flask move RSS by a few MB on their own.
SLACK = 16 * 1024 * 1024
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="measures peak RSS through Linux /proc"
)

#: Sizes up to the formats' limits, and the sizes of real bombs.
SIDES = st.integers(1, 65535) | st.sampled_from([4000, 8000, 12000, 16000, 24000, 32000])


@dataclass(frozen=True)
class Crafted:
    """A crafted file, described (Hypothesis prints this, not megabytes of bytes)."""

    make: Callable[..., bytes]
    args: tuple[int, ...]
    options: tuple[tuple[str, Any], ...] = ()
    #: ("cut", n): keep n bytes; ("byte", at, value): overwrite one byte.
    damage: tuple[Any, ...] = ()

    def data(self) -> bytes:
        """Return the file's bytes."""
        data = self.make(*self.args, **dict(self.options))
        if self.damage[:1] == ("cut",):
            return data[: self.damage[1]]
        if self.damage[:1] == ("byte",) and data:
            at = self.damage[1] % min(len(data), 200)
            return data[:at] + bytes([self.damage[2]]) + data[at + 1 :]
        return data

    def __repr__(self) -> str:
        options = "".join(f", {name}={value!r}" for name, value in self.options)
        arguments = ", ".join(map(str, self.args))
        return f"images.{self.make.__name__}({arguments}{options}) damaged {self.damage}"


def _jpeg(width: int, height: int, **options: Any) -> bytes:
    # Full entropy data up to 2^28 samples (2 bits per 8x8 block: at most 1 MB); beyond,
    # the header alone. Decoded without the checks, 2^28 samples hold 512 MB of coefficients.
    truncate = options.pop("truncate") or width * height * options["components"] > 1 << 28
    return images.jpeg(width, height, truncate=truncate, **options)


def _options(
    **strategies: st.SearchStrategy[Any],
) -> st.SearchStrategy[tuple[tuple[str, Any], ...]]:
    return st.fixed_dictionaries(strategies).map(lambda chosen: tuple(chosen.items()))


JPEG_OPTIONS = _options(
    components=st.sampled_from([1, 3, 4]),
    sof=st.sampled_from([0xFFC0, 0xFFC1, 0xFFC2, 0xFFC2, 0xFFC3, 0xFFC9, 0xFFCA, 0xFFCE]),
    sampling=st.sampled_from([0x11, 0x21, 0x12, 0x22, 0x41, 0x44, 0x05]),
    interleaved=st.booleans(),
    scans=st.integers(1, 12),
    truncate=st.booleans(),
)
PNG_OPTIONS = st.builds(
    lambda kind, interlace, frames: (
        ("depth", kind[0]),
        ("colour", kind[1]),
        ("interlace", interlace),
        ("frames", frames),
    ),
    st.sampled_from(
        [(1, 0), (8, 0), (16, 0), (8, 2), (16, 2), (4, 3), (8, 3), (8, 4), (16, 6), (3, 2), (8, 5)]
    ),
    st.sampled_from([0, 1, 2]),
    st.integers(1, 3),
)
WEBP_SIDES = st.tuples(st.integers(1, 16384), st.integers(1, 16384))
DAMAGE = (
    st.sampled_from([()] * 2)
    | st.tuples(st.just("cut"), st.integers(0, 4000))
    | st.tuples(st.just("byte"), st.integers(0, 199), st.integers(0, 255))
)
#: JPEG sizes: anything, and the shapes of bombs at LIMIT (1/8 of them is LIMIT pixels).
JPEG_SIZES = st.tuples(SIDES, SIDES) | st.sampled_from([(8000, 8000), (4000, 16000), (8192, 7800)])
FILES = st.one_of(
    st.builds(Crafted, st.just(_jpeg), JPEG_SIZES, JPEG_OPTIONS, DAMAGE),
    st.builds(
        Crafted,
        st.just(images.png),
        st.tuples(st.integers(0, 2**31), st.integers(1, 2**31)) | st.tuples(SIDES, SIDES),
        PNG_OPTIONS,
        DAMAGE,
    ),
    st.builds(Crafted, st.just(images.webp_lossless), WEBP_SIDES, st.just(()), DAMAGE),
    st.builds(
        Crafted, st.just(images.webp_canvas), WEBP_SIDES, st.just((("animated", True),)), DAMAGE
    ),
    st.builds(Crafted, st.just(images.gif), st.tuples(st.integers(0, 65535), SIDES)),
)


def _status(field: str) -> int:
    with open("/proc/self/status") as file:
        match = re.search(field + r":\s+(\d+) kB", file.read())
    assert match is not None
    return int(match.group(1)) * 1024


@pytest.fixture
def limited_app(job_config: dict[str, Any], tmp_path: Path) -> Flask:
    return make_app({**job_config, "IMAGE_MAX_PIXELS": LIMIT}, tmp_path / "instance")


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(crafted=FILES, operations=st.sampled_from([["thumbnail"], ["webp"]]))
def test_hostile_headers_get_489_or_a_bounded_200(
    limited_app: Flask, crafted: Crafted, operations: list[str]
) -> None:
    """Any crafted header is a 489, or a 200 whose peak RSS rise is within the bound."""
    data = crafted.data()
    root = Path(limited_app.config["STORAGE_ROOT"])
    root.mkdir(parents=True, exist_ok=True)
    (root / "in").write_bytes(data)
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # the peak RSS starts again from here
    before = _status("VmRSS")
    payload = {"fileKey": "in", "userId": "u", "operations": operations}
    response = DeliveryClient(limited_app).deliver("process-image", payload)
    rise = _status("VmHWM") - before
    event(f"answered {response.status_code}")
    assert response.status_code in (200, 489), response.get_json()
    assert rise <= PEAK_BYTES_PER_PIXEL * LIMIT + len(data) + SLACK, (rise, response.get_json())
