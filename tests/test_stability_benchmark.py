"""The box arithmetic behind benchmarks/stability.py: moved and scaled boxes, clipping, whole-image faces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer import images
from fer.preprocess import PrepSettings

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "stability.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("stability_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BOX = (20.0, 40.0, 70.0, 140.0)  # top, left, bottom, right: 100 wide, 50 high


def test_moved_left_by_a_share_of_the_width_keeps_the_size():
    assert images.shifted_box(BOX, dx=-0.08) == pytest.approx((20.0, 32.0, 70.0, 132.0))


def test_moved_up_by_a_share_of_the_height_keeps_the_size():
    assert images.shifted_box(BOX, dy=-0.08) == pytest.approx((16.0, 40.0, 66.0, 140.0))


def test_scaled_about_the_centre():
    assert images.shifted_box(BOX, scale=0.9) == pytest.approx((22.5, 45.0, 67.5, 135.0))
    assert images.shifted_box(BOX, scale=1.15) == pytest.approx((16.25, 32.5, 73.75, 147.5))


def test_unchanged_box_stays_put():
    assert images.shifted_box(BOX) == pytest.approx(BOX)


def test_a_box_moved_past_the_edge_is_clipped_when_cropped():
    box = images.shifted_box((0.0, 0.0, 50.0, 50.0), dx=-0.08, dy=-0.08)
    assert box[0] < 0 and box[1] < 0
    assert images.crop_box(box, 200, 100, 0.0) == (0, 0, 46, 46)
    grown = images.shifted_box((60.0, 150.0, 100.0, 200.0), scale=1.15)
    assert images.crop_box(grown, 200, 100, 0.0) == (146, 57, 200, 100)


def test_benchmark_variants_in_order():
    bench = load_benchmark()
    boxes = bench.variant_boxes(BOX)
    assert [name for name, *_ in bench.VARIANTS][0] == "labelled box"
    assert boxes[0] == pytest.approx(BOX)
    assert boxes[1] == pytest.approx((20.0, 32.0, 70.0, 132.0))
    assert boxes[2] == pytest.approx((16.0, 40.0, 66.0, 140.0))
    assert boxes[3] == pytest.approx((22.5, 45.0, 67.5, 135.0))
    assert boxes[4] == pytest.approx((16.25, 32.5, 73.75, 147.5))


def test_whole_image_face_shifts_its_content_and_pads_with_the_edge():
    bench = load_benchmark()
    pixels = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))  # brightness rises to the right
    crops = bench.whole_image_variants(Image.fromarray(pixels), PrepSettings(size=48, margin=0.0))
    assert crops.shape == (5, 48, 48)
    np.testing.assert_array_equal(crops[0], pixels)  # the labelled box is the image itself
    # Moved left 8% of 48 (3.84 px): the image's left edge fills the first columns, the content moves right.
    assert (crops[1][:, :3] == 0).all()
    assert crops[1][0, 40] < pixels[0, 40]
    # Moved up on an image that only varies left to right: nothing changes.
    np.testing.assert_array_equal(crops[2], pixels)


def test_letterbox_fits_a_tall_photo_into_the_frame_centred():
    bench = load_benchmark()
    photo = Image.new("RGB", (300, 600), (255, 0, 0))
    frame, scale, x, y = bench.letterbox(photo)
    assert frame.size == (640, 480)
    assert scale == pytest.approx(0.8) and (x, y) == (200, 0)
    assert frame.getpixel((0, 240)) == bench.GREY
    assert frame.getpixel((320, 240)) == (255, 0, 0)
