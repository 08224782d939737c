"""process-image's peak memory per image, at the real limits: bombs and worst accepted inputs.

Each case is delivered once in a fresh child process (after a warm-up delivery) and the
rise of its peak RSS is printed, in MB and in bytes per ``IMAGE_MAX_PIXELS`` pixel: the
numbers behind ``DECODE_BYTES_PER_PIXEL`` and ``PEAK_BYTES_PER_PIXEL`` in jobs/image.py.
Linux only (``/proc/self/clear_refs`` resets the peak). Building the inputs takes a minute.

Each case states the answer it must get (489: refused as a bomb; 200: processed); any
other answer makes the run exit 1. ``--smoke``: ``IMAGE_MAX_PIXELS`` 1,000,000 and the
first refused and the first processed case only (CI: the same code path in seconds).

Run: ``.venv/bin/python bench/image_memory.py [--limit PIXELS] [--smoke]`` (default
50,000,000)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.jobs import images  # noqa: E402 - after the path is set
from tests.jobs.test_image_memory import CHILD  # noqa: E402

OK, REFUSED = 200, 489


def _photo(side: int, mode: str = "RGB") -> Image.Image:
    return Image.effect_noise((side // 4, side // 4), 40).convert(mode).resize((side, side))


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6, **options)
    return buffer.getvalue()


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85, **options)
    return buffer.getvalue()


def _noisy_alpha(side: int) -> bytes:
    """An RGBA PNG with smooth colours and an alpha of noise: WebP's costliest input."""
    smooth = Image.linear_gradient("L").resize((side, side))
    alpha = Image.effect_noise((side, side), 80)
    return _png(Image.merge("RGBA", [smooth, smooth.rotate(90), smooth, alpha]))


def cases(limit: int) -> list[tuple[str, str, int, Callable[[], bytes]]]:
    """Return (name, operations, expected status, input maker) for each measured case."""
    side = math.isqrt(limit)
    return [
        (
            "progressive JPEG 32000x32000",
            "thumbnail",
            REFUSED,
            lambda: images.jpeg(32000, 32000, sof=0xFFC2),
        ),
        (
            "3-scan JPEG 9000x9000",
            "thumbnail",
            REFUSED,
            lambda: images.jpeg(9000, 9000, components=3, interleaved=False),
        ),
        ("lossless WebP 7071x7071", "thumbnail", REFUSED, lambda: images.webp_lossless(7071, 7071)),
        ("RGB PNG at the limit", "webp", OK, lambda: _png(_photo(side))),
        (
            "palette PNG + transparency",
            "webp",
            OK,
            lambda: _png(_photo(side).convert("P"), transparency=0),
        ),
        ("progressive 4:2:0 JPEG", "webp", OK, lambda: _jpeg(_photo(side), progressive=True)),
        ("baseline JPEG", "webp", OK, lambda: _jpeg(_photo(side))),
        ("noisy-alpha PNG, 62% of the limit", "webp", OK, lambda: _noisy_alpha(side * 79 // 100)),
        ("WebP at its budget (limit / 2)", "webp", OK, lambda: _webp(side * 707 // 1000)),
    ]


def first_of_each_status(
    every: list[tuple[str, str, int, Callable[[], bytes]]],
) -> list[tuple[str, str, int, Callable[[], bytes]]]:
    """Return the first case expecting each answer (the smoke run's selection)."""
    seen: set[int] = set()
    chosen = []
    for case in every:
        if case[2] not in seen:
            seen.add(case[2])
            chosen.append(case)
    return chosen


def _webp(side: int) -> bytes:
    buffer = io.BytesIO()
    _photo(side).save(buffer, "WEBP", quality=50, method=0)
    return buffer.getvalue()


def measure(data: bytes, limit: int, operations: str) -> dict[str, object]:
    """Deliver ``data`` in a child process; return its status, message and RSS rise."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "storage").mkdir()
        (Path(folder) / "storage" / "input").write_bytes(data)
        command = [sys.executable, "-c", CHILD, folder, str(limit), operations]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    answer: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return answer


def main() -> int:
    """Measure each case; return 1 if any got another answer than its expected one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=50_000_000, help="IMAGE_MAX_PIXELS")
    parser.add_argument("--smoke", action="store_true", help="tiny limit, two cases (CI)")
    args = parser.parse_args()
    limit = 1_000_000 if args.smoke else args.limit
    chosen = first_of_each_status(cases(limit)) if args.smoke else cases(limit)
    print(f"IMAGE_MAX_PIXELS={limit:,}")
    print(f"{'case':38} {'input MB':>9} {'status':>6} {'rise MB':>8} {'B/pixel':>8}")
    wrong = []
    for name, operations, expected, make in chosen:
        data = make()
        answer = measure(data, limit, operations)
        rise = int(str(answer["rise"]))
        print(
            f"{name:38} {len(data) / 1e6:9.1f} {answer['status']!s:>6}"
            f" {rise / 1e6:8.0f} {rise / limit:8.1f}"
        )
        if answer["status"] != expected:
            wrong.append(f"{name}: expected {expected}, got {answer['status']} {answer['body']}")
    for line in wrong:
        print(line, file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
