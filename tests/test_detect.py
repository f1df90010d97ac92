"""Face detectors: box matching, a blank photo, and a real photo's labelled face."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fer import datasets, detect


def test_iou_of_known_boxes():
    assert detect.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert detect.iou((0, 0, 10, 10), (0, 5, 10, 15)) == pytest.approx(50 / 150)
    assert detect.iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_match_is_one_to_one_and_respects_the_threshold():
    truth = [(0, 0, 10, 10), (0, 20, 10, 30)]
    found = [(0, 1, 10, 11), (0, 0, 10, 9), (50, 50, 60, 60)]
    # Both detections overlap the first face; the better one wins, the second face stays unmatched.
    assert detect.match(truth, found) == [1, None]
    assert detect.match(truth, [(0, 8, 10, 18)], threshold=0.3) == [None, None]


def test_unknown_detector_name_is_refused():
    with pytest.raises(ValueError, match="detector must be one of haar, mtcnn"):
        detect.make("yolo")


@pytest.mark.parametrize("name", detect.NAMES)
def test_blank_photo_has_no_face(name):
    assert detect.make(name).detect(np.full((240, 320, 3), 127, np.uint8)) == []


@pytest.mark.realdata
@pytest.mark.parametrize("name", detect.NAMES)
def test_detector_finds_the_labelled_face_in_a_real_photo(name, expw_sample):
    dataset = datasets.load(expw_sample)
    face = dataset.faces[dataset.faces["photo"] == "image/afraid_man_208.jpg"].iloc[0]
    rgb = np.asarray(Image.open(dataset.photo_path(face["photo"])).convert("RGB"))
    found = detect.make(name).detect(rgb)
    truth = (face["top"], face["left"], face["bottom"], face["right"])
    matched = detect.match([truth], [d.box for d in found])[0]
    assert matched is not None
    assert detect.iou(truth, found[matched].box) > 0.5
