"""process-image's outputs: a resize in two bands, the thumbnail beside the main encode."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageFilter

from jobs.image import BAND_MIN_PIXELS, render, resize


def photo(size: tuple[int, int]) -> Image.Image:
    """Return a deterministic image with sharp detail (a fractal) and smooth gradients."""
    detail = Image.effect_mandelbrot(size, (-2.0, -1.2, 0.8, 1.2), 100)
    ramp = Image.linear_gradient("L").resize(size)
    channels = (detail, ramp, ramp.transpose(Image.Transpose.ROTATE_180))
    return Image.merge("RGB", channels).filter(ImageFilter.GaussianBlur(1))


class CountingPool(ThreadPoolExecutor):
    """A two-thread pool that counts the tasks given to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.tasks = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.tasks += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize(
    ("size", "width"),
    [
        ((2000, 1500), 1024),  # a 12 MP JPEG after draft(): exact binary scales
        ((1999, 1001), 1000),  # odd sizes, a scale of about 2
        ((1500, 4001), 333),  # portrait, a reduce() step before the bicubic filter
        ((5000, 3333), 700),  # a reduce() by 3
        ((1130, 504), 1065),  # a slight downscale
    ],
)
def test_banded_resize_is_one_resize_within_rounding(size: tuple[int, int], width: int) -> None:
    """Both bands on the pool give one resize's size and pixels, within 3 levels, no seam.

    Pillow may order its two passes differently for a band than for the whole image,
    so rounding (and clipping between the passes) can differ; nothing else does.
    """
    image = photo(size)
    whole = resize(image, width)
    with CountingPool() as pool:
        banded = resize(image, width, pool)
        assert pool.tasks == 1  # the lower band; the upper one is made by the caller
    assert banded.size == whole.size == (width, round(size[1] * width / size[0]))
    extrema = ImageChops.difference(banded, whole).getextrema()
    assert max(high for _, high in extrema) <= 3


def test_small_outputs_are_resized_in_one_piece() -> None:
    """Below BAND_MIN_PIXELS a second thread costs more than it saves: the pool is unused."""
    image = photo((1200, 400))
    assert 600 * 200 < BAND_MIN_PIXELS
    with CountingPool() as pool:
        resized = resize(image, 600, pool)
        assert pool.tasks == 0
    assert resized.size == (600, 200)


def test_rgba_is_resized_in_one_piece() -> None:
    """Pillow premultiplies a whole RGBA source per resize: two bands would do it twice."""
    image = photo((2000, 1500)).convert("RGBA")
    with CountingPool() as pool:
        resized = resize(image, 1024, pool)
        assert pool.tasks == 0
    assert (resized.mode, resized.size) == ("RGBA", (1024, 768))


def test_render_lets_the_decoded_image_go_once_the_main_output_is_made() -> None:
    """With a resized main output as the thumbnail's source, no output keeps the decode."""
    image = photo((2000, 1500))
    decoded = weakref.ref(image)
    pool: Executor
    with ThreadPoolExecutor(max_workers=2) as pool:
        outputs = render(image, ["resize", "webp", "thumbnail"], 1024, "JPEG", pool)
        del image
        gc.collect()
        assert decoded() is None
        made = [(operation, make().size) for operation, _, make, _ in outputs]
    assert made == [("resize", (1024, 768)), ("thumbnail", (256, 256))]


def test_render_keeps_the_decoded_image_when_the_thumbnail_needs_it() -> None:
    """A main output narrower than the thumbnail leaves the decoded image as its source."""
    image = photo((1000, 800))
    outputs = render(image, ["resize", "thumbnail"], 200, "PNG")
    sizes = [make().size for _, _, make, _ in outputs]
    assert sizes == [(200, 160), (256, 256)]
