"""process-image's outputs: the thumbnail made beside the main output, the decode let go."""

from __future__ import annotations

import gc
import weakref

from PIL import Image, ImageFilter

from jobs.image import render


def photo(size: tuple[int, int]) -> Image.Image:
    """Return a deterministic image with sharp detail (a fractal) and smooth gradients."""
    detail = Image.effect_mandelbrot(size, (-2.0, -1.2, 0.8, 1.2), 100)
    ramp = Image.linear_gradient("L").resize(size)
    channels = (detail, ramp, ramp.transpose(Image.Transpose.ROTATE_180))
    return Image.merge("RGB", channels).filter(ImageFilter.GaussianBlur(1))


def test_render_lets_the_decoded_image_go_once_the_main_output_is_made() -> None:
    """With a resized main output as the thumbnail's source, no output keeps the decode."""
    image = photo((2000, 1500))
    decoded = weakref.ref(image)
    outputs = render(image, ["resize", "webp", "thumbnail"], 1024, "JPEG")
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
