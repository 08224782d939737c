"""process-image's peak memory, measured in a fresh process per case: bombs and the bound.

Each case runs one delivery in a child Python, after a warm-up delivery has paid for
imports, and reports how far its peak RSS rose above the RSS it started from (Linux:
``/proc/self/clear_refs`` resets the peak, ``VmHWM`` in ``/proc/self/status`` reads it).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from jobs.image import DECODE_BYTES_PER_PIXEL, PEAK_BYTES_PER_PIXEL
from tests.jobs import images

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="measures peak RSS through Linux /proc"
)
MiB = 1024 * 1024
#: What a refused delivery may still cost: the input's bytes, Pillow's header parse.
REFUSAL_BYTES = 16 * MiB

CHILD = """
import json, re, sys
from pathlib import Path
from PIL import Image
from tests.conftest import TEST_CONFIG
from tests.jobs.conftest import make_app
from app.testing import DeliveryClient

root, limit, operations = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
config = {**TEST_CONFIG, "STORAGE_ROOT": str(root / "storage"), "IMAGE_MAX_PIXELS": limit}
client = DeliveryClient(make_app(config, root / "instance"))
Image.new("RGB", (300, 200)).save(root / "storage" / "warm.png")
payload = {"fileKey": "warm.png", "userId": "u", "operations": operations, "targetWidth": 64}
assert client.deliver("process-image", payload).status_code == 200
def status(field):
    with open("/proc/self/status") as file:
        return int(re.search(field + r":\\s+(\\d+) kB", file.read()).group(1)) * 1024
with open("/proc/self/clear_refs", "w") as file:
    file.write("5")  # the peak RSS starts again from the current RSS
before = status("VmRSS")
response = client.deliver("process-image", {**payload, "fileKey": "input", "targetWidth": 1024})
rise = status("VmHWM") - before
print(json.dumps({"status": response.status_code, "body": response.get_json(), "rise": rise}))
"""


def deliver_measured(
    tmp_path: Path, data: bytes, *, limit: int = 50_000_000, operations: str = "thumbnail"
) -> dict[str, Any]:
    """Deliver ``data`` as the input in a child process; return status, body and RSS rise."""
    (tmp_path / "storage").mkdir()
    (tmp_path / "storage" / "input").write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(limit), operations],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return answer


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (images.jpeg(32000, 32000, sof=0xFFC2), "progressive JPEG"),
        (images.jpeg(9000, 9000, components=3, interleaved=False), "multi-scan JPEG"),
        (images.webp_lossless(7071, 7071), "WebP"),
    ],
    ids=["progressive-32000", "sequential-multi-scan-9000", "webp-lossless-7071"],
)
def test_bombs_are_refused_before_memory_is_spent(tmp_path: Path, data: bytes, kind: str) -> None:
    """Small files whose decoders would hold 0.5 to 2 GB are a 489, at a few MB of RSS.

    A 2 MB progressive JPEG of 32000x32000 (libjpeg buffers all its coefficients, 2 GB,
    even when draft() decodes 1/8), a 0.8 MB JPEG whose three components are in separate
    scans (the same buffer, 0.5 GB) and a 28-byte lossless WebP of 50 MP (0.8 GB).
    """
    answer = deliver_measured(tmp_path, data)
    assert answer["status"] == 489, answer
    assert kind in answer["body"]["message"]
    assert "IMAGE_MAX_PIXELS" in answer["body"]["message"]
    assert answer["rise"] < REFUSAL_BYTES + len(data), answer


def _photo(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    return Image.effect_noise((size[0] // 4, size[1] // 4), 40).convert(mode).resize(size)


def _noisy_alpha(size: tuple[int, int]) -> Image.Image:
    """Return an RGBA photo whose alpha is noise: the costliest input for WebP's encoder."""
    return Image.merge("RGBA", [*_photo(size).split(), Image.effect_noise(size, 80)])


def _encoded(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


LIMIT = 4_000_000
SIDE = 2000  # LIMIT pixels
#: The progressive JPEG whose coefficients nearly fill the decode budget at LIMIT.
BOMB_SIDE = 3900


@pytest.mark.parametrize(
    ("data", "operations"),
    [
        (_encoded(_photo((SIDE, SIDE)), "PNG", compress_level=1), "webp"),
        (_encoded(_photo((SIDE, SIDE)).convert("P"), "PNG", transparency=0), "webp"),
        (_encoded(_noisy_alpha((SIDE, SIDE)), "PNG", compress_level=1), "webp"),
        (_encoded(_photo((SIDE, SIDE)), "JPEG", progressive=True, subsampling=2), "webp"),
        (_encoded(_photo((SIDE // 2, SIDE // 2)), "WEBP", quality=50), "webp"),
        (images.jpeg(BOMB_SIDE, BOMB_SIDE, sof=0xFFC2), "thumbnail"),
    ],
    ids=["rgb-png", "palette-png", "alpha-png", "progressive-jpeg", "webp", "jpeg-at-budget"],
)
def test_peak_memory_stays_within_the_documented_bound(
    tmp_path: Path, data: bytes, operations: str
) -> None:
    """The worst accepted inputs at a 4 MP limit stay under PEAK_BYTES_PER_PIXEL a pixel.

    Each is as large as the limits allow (4 MP decoded, or a decoder holding its
    DECODE_BYTES_PER_PIXEL bytes a pixel) and most go to a full-size WebP, the costliest
    output: the bound the README documents, scaled down.
    """
    answer = deliver_measured(tmp_path, data, limit=LIMIT, operations=operations)
    assert answer["status"] == 200, answer
    assert answer["rise"] <= PEAK_BYTES_PER_PIXEL * LIMIT + len(data), answer
    assert answer["rise"] > LIMIT, answer  # the measurement sees the decode at all


def test_the_multi_scan_bomb_case_is_at_the_decode_budget() -> None:
    """The 'jpeg-at-budget' case above nearly fills the decode budget of LIMIT."""
    from jobs.image_header import read_header

    header = read_header(images.jpeg(BOMB_SIDE, BOMB_SIDE, sof=0xFFC2))
    decoded = (-(-BOMB_SIDE // 8), -(-BOMB_SIDE // 8))  # draft() at 1/8 for a thumbnail
    assert 0.9 * LIMIT * DECODE_BYTES_PER_PIXEL < header.decode_bytes(decoded)
    assert header.decode_bytes(decoded) <= LIMIT * DECODE_BYTES_PER_PIXEL
