"""process-image against pyvips: 12 MP JPEG → 1024 px WebP + 256 px WebP thumbnail.

Each side runs in its own fresh process (so peak RSS is its own), several rounds, and
the medians are printed side by side with their ratio:

* ``pipeline``: the real process-image job, through a signed delivery to the app
  (storage read, one draft() decode, both encodes, storage writes).
* ``pyvips``: libvips doing the same outputs the usual way, ``thumbnail()`` from the
  file for each output (shrink-on-load, auto-rotate, ICC kept).
* ``pyvips-1-decode``: libvips decoding once and deriving the thumbnail from the
  1024 px image, for reference.

Run: ``.venv/bin/python bench/image.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH, THUMB, QUALITY = 1024, 256, 80


def make_photo(path: Path) -> None:
    """Write a 4000x3000 JPEG with photo-like detail (gradients, noise, shapes)."""
    from PIL import Image, ImageDraw, ImageFilter

    noise = Image.effect_noise((4000, 3000), 48).convert("RGB")
    gradient = Image.linear_gradient("L").resize((4000, 3000)).convert("RGB")
    image = Image.blend(noise, gradient, 0.6)
    draw = ImageDraw.Draw(image)
    for i in range(40):
        x, y = (i * 397) % 3800, (i * 211) % 2800
        draw.ellipse((x, y, x + 200, y + 150), fill=(i * 6 % 255, 120, 255 - i * 5 % 255))
    image = image.filter(ImageFilter.GaussianBlur(1))
    image.save(path, "JPEG", quality=90)


def run_pipeline(source: Path, rounds: int) -> list[float]:
    """Time the process-image job through signed deliveries; return seconds per round."""
    sys.path.insert(0, str(ROOT))
    from app import create_app
    from app.testing import DeliveryClient

    with tempfile.TemporaryDirectory() as storage:
        (Path(storage) / "photo.jpg").write_bytes(source.read_bytes())
        config = {
            "TESTING": True,
            "QSTASH_CURRENT_SIGNING_KEY": "sig_bench_current_0123456789abcdef",
            "QSTASH_NEXT_SIGNING_KEY": "sig_bench_next_0123456789abcdefghi",
            "APP_URL": "https://bench.example.com",
            "STORAGE_ROOT": storage,
        }
        client = DeliveryClient(create_app(config))
        payload = {
            "fileKey": "photo.jpg",
            "userId": "bench",
            "operations": ["resize", "webp", "thumbnail"],
            "targetWidth": WIDTH,
        }
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            response = client.deliver("process-image", payload)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.get_json()
        return times


def run_pyvips(source: Path, rounds: int, one_decode: bool) -> list[float]:
    """Time libvips producing the same two WebP outputs; return seconds per round."""
    import pyvips

    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(rounds):
            started = time.perf_counter()
            data = source.read_bytes()
            main = pyvips.Image.thumbnail_buffer(data, WIDTH, height=10**7, size="down")
            if one_decode:
                main = main.copy_memory()  # decoded once, kept for the thumbnail
            main.webpsave(f"{out}/main.webp", Q=QUALITY, effort=4, keep="icc")
            if one_decode:
                thumb = main.thumbnail_image(THUMB, height=THUMB, crop="centre", size="down")
            else:
                thumb = pyvips.Image.thumbnail_buffer(
                    data, THUMB, height=THUMB, crop="centre", size="down"
                )
            thumb.webpsave(f"{out}/thumb.webp", Q=QUALITY, effort=4, keep="icc")
            times.append(time.perf_counter() - started)
    return times


def child(kind: str, source: Path, rounds: int) -> None:
    """Run one side and print its times and peak RSS as JSON."""
    if kind == "pipeline":
        times = run_pipeline(source, rounds)
    else:
        times = run_pyvips(source, rounds, one_decode=kind == "pyvips-1-decode")
    print(json.dumps({"times": times, "peak_rss_mib": peak_rss_kib() / 1024}))


def peak_rss_kib() -> int:
    """Return this process's peak RSS (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(kind: str, source: Path, rounds: int) -> tuple[list[float], float]:
    """Run one side in a fresh process; return its round times (s) and peak RSS (MiB)."""
    command = [sys.executable, __file__, "--child", kind, "--source", str(source)]
    output = subprocess.run(
        [*command, "--rounds", str(rounds)], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return result["times"][1:], result["peak_rss_mib"]  # round 1 warms imports and caches


KINDS = ("pipeline", "pyvips", "pyvips-1-decode")


def compare(source: Path, rounds: int, passes: int) -> dict[str, dict[str, float]]:
    """Alternate the sides ``passes`` times (load drifts on a shared machine); pool rounds."""
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    peaks: dict[str, float] = dict.fromkeys(KINDS, 0.0)
    for _ in range(passes):
        for kind in KINDS:
            kind_times, peak = measure(kind, source, rounds)
            times[kind] += kind_times
            peaks[kind] = max(peaks[kind], peak)
    return {
        kind: {"median_ms": statistics.median(times[kind]) * 1000, "peak_rss_mib": peaks[kind]}
        for kind in KINDS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--source", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.source, args.rounds)
        return
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "photo.jpg"
        make_photo(source)
        size_mb = source.stat().st_size / 1e6
        print(
            f"source: 4000x3000 JPEG, {size_mb:.1f} MB; {args.passes} passes x {args.rounds} rounds"
        )
        results = compare(source, args.rounds, args.passes)
    base = results["pyvips"]
    header = ("side", "median ms", "peak RSS MiB", "time vs pyvips", "RSS vs pyvips")
    print(f"{header[0]:<18}{header[1]:>10}{header[2]:>14}{header[3]:>16}{header[4]:>15}")
    for kind, result in results.items():
        print(
            f"{kind:<18}{result['median_ms']:>10.1f}{result['peak_rss_mib']:>14.1f}"
            f"{result['median_ms'] / base['median_ms']:>15.2f}x"
            f"{result['peak_rss_mib'] / base['peak_rss_mib']:>14.2f}x"
        )


if __name__ == "__main__":
    main()
