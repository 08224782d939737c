"""process-image against single-decode pyvips: 12 MP JPEG → 1024 px WebP + 256 px thumbnail.

Both sides are jobs of this framework, each mounted alone in a fresh app and run through
signed deliveries (the delivery log and duplicate guard off, as under TESTING without a
DATABASE_URL): each reads the JPEG from storage, decodes it once, writes the same two
outputs to storage.

* ``pipeline``: the real process-image job (``jobs/image.py``, Pillow).
* ``pyvips``: the same job written with libvips the way its users do: shrink-on-load by
  the power of two ``draft()`` picks, auto-rotate, ``resize()`` with the cubic kernel
  (Catmull-Rom, like Pillow's BICUBIC, with the same 2x reducing gap) into memory, the
  thumbnail cropped from that and resized the same way, then the two WebP encodes. libvips'
  operation cache is off: a worker never sees the same file twice, and here it would skip
  the repeated work.

Both encode WebP at quality 80, method (libvips: effort) 4, everything else at libwebp's
defaults. A round runs each side in a fresh process (so peak RSS, /proc VmHWM, is its
own), in alternating order: one warm-up delivery, then ``--repeats`` timed ones whose
median is the round's figure. Reported per side, medians over the rounds: wall time and
CPU time (all threads) per delivery; peak RSS, and its rise over the RSS before the first
image (imports and app); the bytes of each output and its PSNR (dB, RGB, computed with
Pillow) against a reference made from the full-size decode with Pillow's Lanczos (no
reducing gap) at the same size and crop. Ratios are ours / pyvips per round: median
(min–max) over the rounds. CPU time moves less than wall time on a busy machine.

Run: ``.venv/bin/python bench/image.py [--rounds 9] [--repeats 5]``. ``--smoke`` runs one
round of one delivery a side on a 2400x1800 JPEG (still draft() at 1/2, the resize,
shrink-on-load) in a few seconds, and exits non-zero when a side fails or makes
an output of the wrong size or a PSNR below 25 dB; where pyvips does not import it runs
the pipeline side only, and says so.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

    from app.jobs import JobRegistry

ROOT = Path(__file__).resolve().parent.parent
WIDTH, THUMB, QUALITY, EFFORT = 1024, 256, 80, 4
SIDES = ("pipeline", "pyvips")
OUTPUTS = ("main", "thumb")
#: Below this an output is broken, not merely a little different.
MIN_PSNR = 25.0
SOURCE_KEY = "photo.jpg"
#: The output keys of each side (the pipeline's are its job's).
KEYS = {
    "pipeline": {"main": f"{SOURCE_KEY}.w{WIDTH}.webp", "thumb": f"{SOURCE_KEY}.thumb{THUMB}.webp"},
    "pyvips": {"main": "pyvips.main.webp", "thumb": "pyvips.thumb.webp"},
}


def make_photo(path: Path, size: tuple[int, int]) -> None:
    """Write a JPEG with photo-like detail (gradients, noise, shapes) of ``size`` pixels."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = size
    noise = Image.effect_noise(size, 48).convert("RGB")
    gradient = Image.linear_gradient("L").resize(size).convert("RGB")
    image = Image.blend(noise, gradient, 0.6)
    draw = ImageDraw.Draw(image)
    for i in range(40):
        x, y = (i * 397) % (w - w // 20), (i * 211) % (h - h // 20)
        draw.ellipse((x, y, x + w // 20, y + h // 20), fill=(i * 6 % 255, 120, 255 - i * 5))
    image = image.filter(ImageFilter.GaussianBlur(1))
    image.save(path, "JPEG", quality=90)


def peak_rss_kib(field: str = "VmHWM") -> int:
    """Return this process's peak (VmHWM) or current (VmRSS) resident set, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def shrink_on_load(size: tuple[int, int]) -> int:
    """Return the largest JPEG shrink (1, 2, 4, 8) leaving both outputs enough pixels."""
    w, h = size
    need_w = max(min(WIDTH, w), -(-w * min(THUMB, w, h) // min(w, h)))
    return max(s for s in (1, 2, 4, 8) if -(-w // s) >= need_w)


def pyvips_job(registry: JobRegistry) -> None:
    """Declare ``process-image`` written with pyvips in ``registry``."""
    import pyvips
    from flask import current_app

    from app.storage import storage_for

    pyvips.cache_set_max(0)
    save = {"Q": QUALITY, "effort": EFFORT, "keep": "icc"}

    @registry.job("process-image", retries=2)
    def process_image(payload: dict[str, Any], delivery: Any) -> dict[str, Any]:
        storage = storage_for(current_app)
        data = storage.get(payload["fileKey"], max_bytes=current_app.config["IMAGE_MAX_BYTES"])
        header = pyvips.Image.new_from_buffer(data, "")
        shrink = shrink_on_load((header.width, header.height))
        image = pyvips.Image.new_from_buffer(data, "", shrink=shrink, access="sequential")
        image = image.autorot()
        if image.width > WIDTH:
            image = image.resize(WIDTH / image.width, kernel="cubic")
        main = image.copy_memory()  # decoded once; the thumbnail is made from it
        short = min(main.width, main.height)
        left, top = (main.width - short) // 2, (main.height - short) // 2
        thumb = main.crop(left, top, short, short).resize(min(THUMB, short) / short, kernel="cubic")
        sizes = {}
        for name, output in (("main", main), ("thumb", thumb)):
            encoded = output.webpsave_buffer(**save)
            storage.put(KEYS["pyvips"][name], encoded, content_type="image/webp")
            sizes[name] = len(encoded)
        return sizes


def side_app(side: str, storage: Path) -> Any:
    """Return a fresh app serving only ``side``'s process-image job."""
    from app import create_app
    from app.jobs import JobRegistry

    registry = JobRegistry()
    if side == "pipeline":
        from jobs.image import process_image

        registry.add(process_image)
    else:
        pyvips_job(registry)
    config = {
        "TESTING": True,
        "QSTASH_CURRENT_SIGNING_KEY": "sig_bench_current_0123456789abcdef",
        "QSTASH_NEXT_SIGNING_KEY": "sig_bench_next_0123456789abcdefghi",
        "APP_URL": "https://bench.example.com",
        "STORAGE_ROOT": str(storage),
    }
    return create_app(config, registry=registry)


def child(side: str, source: Path, out: Path, repeats: int) -> None:
    """Deliver process-image once to warm up, then ``repeats`` times; print JSON results."""
    sys.path.insert(0, str(ROOT))
    from app.testing import DeliveryClient

    (out / SOURCE_KEY).write_bytes(source.read_bytes())
    client = DeliveryClient(side_app(side, out))
    payload = {
        "fileKey": SOURCE_KEY,
        "userId": "bench",
        "operations": ["resize", "webp", "thumbnail"],
        "targetWidth": WIDTH,
    }

    def deliver() -> None:
        response = client.deliver("process-image", payload)
        if response.status_code != 200:
            raise RuntimeError(f"{side} answered {response.status_code}: {response.text}")

    base = peak_rss_kib("VmRSS")
    deliver()
    times, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        deliver()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    files = {name: str(out / key) for name, key in KEYS[side].items()}
    peak = peak_rss_kib()
    result = {"time": times, "cpu": cpu, "peak": peak, "rise": peak - base, "files": files}
    print(json.dumps(result))


def measure(side: str, source: Path, out: Path, repeats: int) -> dict[str, Any]:
    """Run one side in a fresh process; return its result, with its outputs' bytes read."""
    command = [sys.executable, __file__, "--child", side, "--source", str(source)]
    command += ["--out", str(out), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["outputs"] = {name: Path(path).read_bytes() for name, path in result["files"].items()}
    return result


def psnr(image: Image, reference: Image) -> float:
    """Return the PSNR in dB of ``image`` against ``reference`` over their RGB channels."""
    from PIL import ImageChops

    histogram = ImageChops.difference(image.convert("RGB"), reference).histogram()
    squares = sum(count * (i % 256) ** 2 for i, count in enumerate(histogram))
    mse = squares / (reference.width * reference.height * 3)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def references(source: Path, sizes: dict[str, tuple[int, int]]) -> dict[str, Image]:
    """Return Lanczos resizes of the full-size decode at each output's size and crop."""
    from PIL import Image, ImageOps

    with Image.open(source) as opened:
        full = ImageOps.exif_transpose(opened).convert("RGB")
    w, h = full.size
    short = min(w, h)
    square = ((w - short) // 2, (h - short) // 2, (w + short) // 2, (h + short) // 2)
    lanczos = Image.Resampling.LANCZOS
    return {
        "main": full.resize(sizes["main"], lanczos),
        "thumb": full.resize(sizes["thumb"], lanczos, box=square),
    }


def quality(result: dict[str, Any], refs: dict[str, Image]) -> dict[str, float]:
    """Return each output's PSNR against its reference; fail on a wrong size."""
    from PIL import Image

    scores = {}
    for name in OUTPUTS:
        with Image.open(io.BytesIO(result["outputs"][name])) as image:
            if image.size != refs[name].size:
                raise SystemExit(f"{name}: {image.size} where {refs[name].size} is expected")
            scores[name] = psnr(image, refs[name])
    return scores


def run_rounds(
    source: Path, sides: tuple[str, ...], rounds: int, repeats: int
) -> list[dict[str, dict[str, Any]]]:
    """Run ``rounds`` rounds, each side in a fresh process, alternating which goes first."""
    results = []
    for number in range(rounds):
        order = sides if number % 2 == 0 else sides[::-1]
        result = {}
        for side in order:
            with tempfile.TemporaryDirectory() as out:
                result[side] = measure(side, source, Path(out), repeats)
        results.append(result)
        print(f"  round {number + 1}/{rounds} done", file=sys.stderr)
    return results


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}–{max(values):.2f})"


def metric(run: dict[str, Any], name: str) -> float:
    """Return one side's figure for one round: median ms, or MiB of RSS."""
    if name in ("time", "cpu"):
        return float(statistics.median(run[name])) * 1000
    return float(run[name]) / 1024


METRICS = {"time": "wall ms", "cpu": "CPU ms", "peak": "peak RSS MiB", "rise": "RSS rise MiB"}


def report(rounds: list[dict[str, dict[str, Any]]], refs: dict[str, Image]) -> None:
    """Print each side's medians over the rounds, outputs and scores, then the ratios."""
    sides = tuple(rounds[0])
    header = [*METRICS.values(), "main bytes", "thumb bytes"]
    print(f"{'side':<10}" + "".join(f"{h:>14}" for h in header) + "   PSNR main / thumb")
    for side in sides:
        last = rounds[-1][side]
        scores = quality(last, refs)
        if min(scores.values()) < MIN_PSNR:
            raise SystemExit(f"{side}: PSNR {scores} below {MIN_PSNR} dB: a broken output")
        cells = [statistics.median(metric(r[side], name) for r in rounds) for name in METRICS]
        sizes = [len(last["outputs"][name]) for name in OUTPUTS]
        print(
            f"{side:<10}"
            + "".join(f"{c:>14.1f}" for c in cells)
            + "".join(f"{s:>14}" for s in sizes)
            + f"   {scores['main']:.2f} / {scores['thumb']:.2f} dB"
        )
    if len(sides) == 2:
        ours, theirs = sides
        print(f"{ours} / {theirs}, median (min–max) of {len(rounds)} per-round ratios:")
        for name, label in METRICS.items():
            ratios = [metric(r[ours], name) / metric(r[theirs], name) for r in rounds]
            print(f"  {label:<14}{spread(ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a small image, 1 round, 1 repeat")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.source, args.out, args.repeats)
        return
    size = (2400, 1800) if args.smoke else (4000, 3000)
    rounds, repeats = (1, 1) if args.smoke else (args.rounds, args.repeats)
    sides: tuple[str, ...] = SIDES
    try:
        import pyvips  # noqa: F401 - only whether it imports
    except (ImportError, OSError) as exc:
        if not args.smoke:
            raise SystemExit(f"pyvips does not import ({exc}): pip install -e '.[bench]'") from None
        sides = ("pipeline",)
        print(f"pyvips does not import ({exc}): smoke run of the pipeline side only")
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "photo.jpg"
        make_photo(source, size)
        print(
            f"source: {size[0]}x{size[1]} JPEG, {source.stat().st_size / 1e6:.1f} MB;"
            f" {rounds} rounds x {repeats} timed runs (+1 warm-up) per side"
        )
        results = run_rounds(source, sides, rounds, repeats)
        w, h = size
        main_size = (min(WIDTH, w), round(h * min(WIDTH, w) / w))
        side = min(THUMB, *main_size)
        refs = references(source, {"main": main_size, "thumb": (side, side)})
        report(results, refs)


if __name__ == "__main__":
    main()
