"""The false-face check: the geometric rules on made-up boxes, the wrapper every detector gets,
and the face score on a real face against noise and flat pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import face_crop
from PIL import Image

from fer import cli, detect, facecheck
from fer.facecheck import CheckedDetector, inside_share, plausible

FACE = (100.0, 100.0, 200.0, 200.0)  # (top, left, bottom, right), 100 px a side


def test_inside_share():
    assert inside_share((120, 120, 140, 140), FACE) == 1.0
    assert inside_share((90, 100, 110, 200), FACE) == pytest.approx(0.5)
    assert inside_share((0, 0, 10, 10), FACE) == 0.0
    assert inside_share((5, 5, 5, 5), FACE) == 0.0  # an empty box lies nowhere


def test_an_eye_inside_a_face_is_dropped_and_the_face_kept():
    eye = (120.0, 120.0, 150.0, 150.0)
    assert plausible([eye, FACE], [0.99, 0.99]) == [1]


def test_a_box_overlapping_a_face_a_little_is_kept():
    neighbour = (130.0, 130.0, 230.0, 230.0)  # half of it lies inside FACE: a face half behind it
    assert inside_share(neighbour, FACE) == pytest.approx(0.49)
    assert plausible([FACE, neighbour], [0.9, 0.9]) == [0, 1]


def test_a_box_far_smaller_than_the_largest_face_is_dropped():
    speck = (400.0, 400.0, 420.0, 420.0)  # a fifth of the face's side, far from it
    fair = (400.0, 400.0, 440.0, 440.0)  # 0.4 of it
    assert plausible([FACE, speck], [0.9, 0.9]) == [0]
    assert plausible([FACE, fair], [0.9, 0.9]) == [0, 1]
    assert plausible([speck]) == [0]  # alone, a small face is still a face


def test_low_face_scores_are_dropped_and_cannot_hide_a_small_face():
    small = (400.0, 400.0, 420.0, 420.0)
    # The large box does not look like a face: it is dropped first, so it does not make the
    # small face look too small.
    assert plausible([FACE, small], [0.1, 0.9]) == [1]
    assert plausible([FACE, small], [0.49, 0.5]) == [1]
    assert plausible([FACE], [0.2], min_score=0.1) == [0]


def test_order_is_kept_and_nothing_in_gives_nothing_out():
    boxes = [(0.0, 0.0, 50.0, 50.0), FACE, (0.0, 300.0, 80.0, 380.0)]
    assert plausible(boxes, [0.9, 0.9, 0.9]) == [0, 1, 2]
    assert plausible([]) == []
    assert plausible([(10.0, 10.0, 10.0, 30.0)]) == []  # no area: not a face


class _Found:
    def __init__(self, box, score=1.0):
        self.box, self.score = box, score


class _Detector:
    name = "fake"
    min_size = 7

    def __init__(self, found):
        self.found = found

    def detect(self, rgb):
        return list(self.found)


class _Scorer:
    """Scores by box: what a real scorer returns for the patch under each box."""

    def __init__(self, scores):
        self.scores = scores

    def score(self, rgb, boxes):
        return np.array([self.scores[tuple(b)] for b in boxes])


def test_the_checked_detector_keeps_the_wrapped_detections_that_pass():
    face, eye, texture = _Found(FACE, 0.99), _Found((120, 120, 150, 150), 0.95), _Found((0, 300, 90, 390))
    scores = {FACE: 0.99, (120, 120, 150, 150): 0.98, (0, 300, 90, 390): 0.01}
    checked = CheckedDetector(_Detector([face, eye, texture]), scorer=_Scorer(scores))
    assert checked.detect(np.zeros((400, 400, 3), np.uint8)) == [face]
    assert checked.name == "fake" and checked.min_size == 7  # the wrapped detector's own settings
    assert CheckedDetector(_Detector([]), scorer=_Scorer({})).detect(np.zeros((9, 9, 3), np.uint8)) == []


def test_make_puts_the_check_on_every_detector():
    for name in detect.NAMES:
        checked = detect.make(name)
        assert isinstance(checked, CheckedDetector) and checked.name == name
        raw = detect.make(name, check=False)
        assert not isinstance(raw, CheckedDetector) and type(raw) is type(checked.detector)


@pytest.fixture(scope="module")
def scorer():
    return facecheck.FaceScorer()


def test_a_real_face_looks_like_one_and_noise_or_flat_pictures_do_not(scorer):
    rng = np.random.default_rng(0)
    faces = [np.asarray(face_crop(size, mode)) for size in (48, 96) for mode in ("L", "RGB")]
    faces.append(np.asarray(face_crop(mode="RGB")))  # not square, as the user cut it
    others = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(5)]
    others += [np.full((64, 64), value, np.uint8) for value in (0, 128, 255)]
    face_scores, other_scores = scorer.score_pictures(faces), scorer.score_pictures(others)
    assert face_scores.min() > 0.5, face_scores
    assert other_scores.max() < facecheck.WHOLE_MIN_SCORE, other_scores
    assert scorer.score_whole(face_crop(96)) == pytest.approx(face_scores[2], abs=1e-5)


def test_scores_follow_the_box_in_a_photo(scorer):
    photo = np.full((300, 400, 3), 90, np.uint8)
    photo[50:146, 200:296] = np.asarray(face_crop(96, "RGB"))
    on_face, beside, half_outside = scorer.score(
        photo, [(50, 200, 146, 296), (150, 20, 246, 116), (-48, 352, 48, 448)]
    )
    assert on_face > 0.5 and beside < 0.05 and half_outside < 0.05
    assert scorer.score(photo, []).shape == (0,)


def test_mtcnn_boxes_a_badge_as_a_face_and_the_check_drops_it():
    import skimage.data

    photo = skimage.data.astronaut()  # one face, and a round badge on the suit MTCNN takes for one
    raw = detect.make("mtcnn", check=False).detect(photo)
    checked = detect.make("mtcnn").detect(photo)
    assert len(raw) == 2
    [face] = checked
    assert face in raw and face.top < 100  # the face at the top is kept


def test_predict_whole_says_a_flat_picture_is_not_a_face(tmp_path, capsys):
    from fer.config import ModelConfig
    from fer.labels import LABELS
    from fer.modelfile import save_model
    from fer.models import build

    model = tmp_path / "model.keras"
    save_model(build(ModelConfig(arch="seed", image_size=48, num_classes=7)), model,
               {"labels": list(LABELS), "image_size": 48, "margin": 0.0})  # fmt: skip
    flat, face = tmp_path / "flat.png", tmp_path / "face.png"
    Image.new("L", (96, 96), 140).save(flat)
    face_crop(96).save(face)
    assert cli.main(["predict", str(flat), str(face), "--model", str(model), "--whole"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{flat}: warning: does not look like a face (face score 0%)")
    assert out[1].startswith(f"{face}: ") and "likely) at top=0 left=0 bottom=96 right=96" in out[1]
    cli.main(["predict", str(flat), str(face), "--model", str(model), "--whole", "--json"])
    first, second = json.loads(capsys.readouterr().out)["photos"]
    assert (
        first["not_a_face"] is True
        and first["faces"] == []
        and first["face_score"] < facecheck.WHOLE_MIN_SCORE
    )
    assert second["not_a_face"] is False and len(second["faces"]) == 1 and second["face_score"] > 0.5


def test_the_onnx_o_net_computes_what_the_mtcnn_package_s_own_does():
    from mtcnn.network.onet import ONet
    from mtcnn.utils.tensorflow import load_weights

    theirs = ONet()
    theirs.build()
    theirs.set_weights(load_weights("onet.lz4"))
    patches = (
        np.random.default_rng(0).uniform(-1, 1, (40, facecheck.PATCH, facecheck.PATCH, 3)).astype(np.float32)
    )
    patches[:20] = facecheck._patches(np.asarray(face_crop(mode="RGB")), [(0.0, 0.0, 150.0, 130.0)] * 20)
    expected = np.asarray(theirs(patches, training=False)[2])[:, 1]
    got = facecheck.FaceScorer()._run(patches)
    assert expected[:20].min() > 0.9  # a real face, as both see it
    np.testing.assert_allclose(got, expected, atol=1e-5)
