"""Maps of where the model looked (fer.saliency): on hand-weighted models whose right answer is known,
on each architecture of fer.models, and a check that a map depends on the face, which a map that
ignores its input is shown to fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import face_crop
from test_backends import run_script

from fer import saliency
from fer.config import ModelConfig

SIZE = 16
APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"


def brightness_model():
    """A model whose class 0 score is the mean brightness after a ReLU of a 1x1 'identity' convolution,
    and class 1 its negative: Grad-CAM of class 0 is then the face itself (brightest where it is
    brightest), which a test can state exactly."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(SIZE, SIZE, 1), name="face")
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(1, 1, activation="relu", name="identity")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("identity").set_weights([np.ones((1, 1, 1, 1)), np.zeros(1)])
    model.get_layer("probabilities").set_weights([np.array([[1.0, -1.0]]), np.zeros(2)])
    return model


def square(top: int, left: int, side: int = 4) -> np.ndarray:
    face = np.full((SIZE, SIZE), 20, dtype=np.uint8)
    face[top : top + side, left : left + side] = 250
    return face


# The check that a map depends on the face --------------------------------------------------------


def map_follows_the_face(map_function) -> None:
    """Fail unless `map_function(faces)` puts each face's peak on its bright square, wherever it is:
    the same map for every face cannot pass, whatever that map is."""
    places = [(0, 0), (0, 12), (12, 0), (12, 12), (6, 6)]
    faces = np.stack([square(top, left) for top, left in places])
    maps = np.asarray(map_function(faces))
    assert maps.shape == faces.shape
    for (top, left), found in zip(places, maps):
        lit = square(top, left) > 100
        inside, outside = found[lit].mean(), found[~lit].mean()
        assert inside > 2 * outside + 1e-6, f"the map of a square at {(top, left)} does not light it up"
    differences = [np.abs(maps[i] - maps[j]).mean() for i in range(len(maps)) for j in range(i)]
    assert min(differences) > 0.05, "two faces with their squares in different places got the same map"


def test_grad_cam_follows_the_bright_square():
    grad_cam = saliency.GradCam(brightness_model())
    assert grad_cam.layer.name == "identity"
    map_follows_the_face(lambda faces: grad_cam.maps(faces, classes=[0] * len(faces)))


def test_the_check_catches_a_map_that_ignores_the_face():
    centre = np.zeros((SIZE, SIZE), dtype=np.float32)
    centre[6:10, 6:10] = 1.0  # right for the square in the middle, wrong for the others

    def fixed(faces):
        return np.repeat(centre[None], len(faces), axis=0)

    with pytest.raises(AssertionError, match="does not light it up"):
        map_follows_the_face(fixed)


def test_the_check_catches_a_map_that_is_the_same_for_every_face():
    # Bright everywhere but a little more on every square's place: it lights every square up, yet
    # says nothing about the face it was given.
    everywhere = np.full((SIZE, SIZE), 0.01, dtype=np.float32)
    for top, left in [(0, 0), (0, 12), (12, 0), (12, 12), (6, 6)]:
        everywhere[top : top + 4, left : left + 4] = 1.0

    with pytest.raises(AssertionError, match="same map"):
        map_follows_the_face(lambda faces: np.repeat(everywhere[None], len(faces), axis=0))


def test_the_other_class_points_away_from_the_square():
    """Class 1's score falls as the square brightens: no position argues for it, so its map is empty."""
    maps = saliency.GradCam(brightness_model()).maps(np.stack([square(0, 0)]), classes=[1])
    assert maps.shape == (1, SIZE, SIZE) and not maps.any()


# The architectures the project trains --------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, kind",
    [
        ("seed", "Conv2D"),
        ("vgg", "Activation"),
        ("vgg-lite", "Activation"),
        ("vgg-steady", "Activation"),
        ("vgg-smooth", "Activation"),
        ("vgg-small", "Activation"),
    ],
)
def test_every_architecture_gets_maps_from_its_last_block(arch, kind):
    from fer import models

    model = models.build(ModelConfig(arch=arch, image_size=48, num_classes=3, width=4))
    grad_cam = saliency.GradCam(model)
    assert type(grad_cam.layer).__name__ == kind
    assert len(grad_cam.layer.output.shape) == 4
    # The block is the last one: nothing after it but pooling and the head.
    after = [type(layer).__name__ for layer in grad_cam.head]
    assert not any("Conv" in name for name in after)
    faces = np.random.default_rng(1).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    maps = grad_cam.maps(faces, batch_size=2)
    assert maps.shape == (5, 48, 48) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(m.max() == pytest.approx(1.0) or not m.any() for m in maps)


def test_bad_faces_and_classes_are_refused_by_name():
    grad_cam = saliency.GradCam(brightness_model())
    with pytest.raises(saliency.SaliencyError, match=r"shape \(n, 16, 16\)"):
        grad_cam.maps(np.zeros((2, 8, 8), dtype=np.uint8))
    with pytest.raises(saliency.SaliencyError, match="from 0 to 1"):
        grad_cam.maps(np.zeros((2, SIZE, SIZE), dtype=np.uint8), classes=[0, 2])
    with pytest.raises(saliency.SaliencyError, match="one class number"):
        grad_cam.maps(np.zeros((2, SIZE, SIZE), dtype=np.uint8), classes=[0])


def test_a_model_without_convolutions_or_without_a_chain_is_refused():
    import keras
    from keras import layers

    inputs = keras.Input(shape=(SIZE, SIZE, 1))
    flat = keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Flatten()(inputs)))
    with pytest.raises(saliency.SaliencyError, match="no convolutional layer"):
        saliency.GradCam(flat)

    x = layers.GlobalAveragePooling2D()(layers.Conv2D(3, 3, activation="relu")(inputs))
    branches = layers.Add()([layers.Dense(4)(x), layers.Dense(4)(x)])
    forked = keras.Model(inputs, layers.Dense(2, activation="softmax")(branches))
    with pytest.raises(saliency.SaliencyError, match="do not form a chain"):
        saliency.GradCam(forked)


# The overlay --------------------------------------------------------------------------------------


def test_overlay_leaves_unsalient_pixels_gray_and_colours_salient_ones():
    face = np.arange(SIZE * SIZE, dtype=np.uint8).reshape(SIZE, SIZE)
    heat = np.zeros((SIZE, SIZE), dtype=np.float32)
    heat[4:8, 4:8] = 1.0
    picture = saliency.overlay(face, heat, scale=1)
    assert picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.uint8
    cold = heat == 0
    assert (picture[cold] == face[cold][:, None]).all()  # gray, the face's own values
    hot = picture[4:8, 4:8].astype(int)
    assert (hot.max(axis=-1) - hot.min(axis=-1) > 60).all()  # coloured
    big = saliency.overlay_image(face, heat, scale=3)
    assert big.size == (3 * SIZE, 3 * SIZE) and big.mode == "RGB"
    with pytest.raises(ValueError, match="same shape"):
        saliency.overlay(face, heat[:8])
    with pytest.raises(ValueError, match="strength"):
        saliency.overlay(face, heat, strength=2)


def test_colours_run_from_cool_to_warm():
    low, high = saliency.colours(np.array([0.0, 1.0]))
    assert low[2] > low[0] and high[0] > high[2]  # blue-ish at 0, red-yellow at 1


# The JAX backend ----------------------------------------------------------------------------------

JAX_SCRIPT = """
import json
import numpy as np
import keras
from keras import layers
from fer import saliency

keras.utils.set_random_seed(0)
inputs = keras.Input(shape=(16, 16, 1), name="face")
x = layers.Rescaling(1.0 / 255)(inputs)
x = layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
x = layers.BatchNormalization()(x)
x = layers.Activation("relu")(x)
x = layers.MaxPooling2D(2)(x)
x = layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
model.save("model.keras")
faces = np.random.default_rng(1).integers(0, 256, (3, 16, 16), dtype=np.uint8)
maps = saliency.GradCam(model).maps(faces)
print(json.dumps({"backend": keras.backend.backend(), "maps": maps.tolist()}))
"""


@pytest.mark.slow
def test_jax_gives_the_maps_tensorflow_gives(tmp_path):
    pytest.importorskip("jax")
    script = JAX_SCRIPT.replace('"model.keras"', repr(str(tmp_path / "model.keras")))
    jax = run_script(script, KERAS_BACKEND="jax")
    assert jax["backend"] == "jax"
    from fer import modelfile

    model = modelfile.logs.load_keras().saving.load_model(tmp_path / "model.keras")
    faces = np.random.default_rng(1).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    here = saliency.GradCam(model).maps(faces)
    assert here.max() == pytest.approx(1.0)  # something to compare: not all maps empty
    assert np.asarray(jax["maps"]) == pytest.approx(here, abs=1e-3)


# Where the maps are shown: the report, the Results page, the Classify page ---------------------------


def test_most_confused_pairs_fullest_first(tmp_path):
    from helpers import EVIL, known_run

    from fer import results
    from fer import runs as R

    metrics = R.read_metrics(known_run(tmp_path / "run"))
    assert results.most_confused(metrics, 3) == [("sad", EVIL, 3), ("sad", "happy", 2), (EVIL, "sad", 2)]
    assert len(results.most_confused(metrics, 10)) == 5  # the empty cell is left out


def test_report_of_a_run_whose_faces_are_gone_says_why_it_has_no_maps(tmp_path):
    from helpers import known_run

    from fer import report

    page = report.build_report(known_run(tmp_path / "run"))
    assert "<h2>Where the model looked</h2>" in page and "No maps:" in page
    assert "data:image/jpeg" not in page
    assert "<h2>Where the model looked</h2>" not in report.build_report(tmp_path / "run", confused_pairs=0)
    with pytest.raises(ValueError, match="maps_per_pair must be at least 0, got -1"):
        report.build_report(tmp_path / "run", maps_per_pair=-1)


@pytest.mark.slow
def test_report_of_a_real_run_shows_maps_of_its_most_confused_pairs(tiny_run, tmp_path):
    import re
    import shutil

    from fer import report, results
    from fer import runs as R

    page = report.build_report(tiny_run, faces_per_cell=1, confused_pairs=2, maps_per_pair=2)
    section = page[page.index("<h2>Where the model looked</h2>") :]
    pairs = results.most_confused(R.read_metrics(tiny_run), 2)
    for true, predicted, count in pairs:
        assert f"<h3>{true} called {predicted} ({count:,} test faces)</h3>" in section
    shown = sum(min(count, 2) for _, _, count in pairs)
    assert section.count("data:image/jpeg;base64,") == 2 * shown  # each face and its map
    assert page.count("data:image/jpeg;base64,") == 2 * shown  # the other faces stay PNG
    assert not re.search(r"https?:", page) and "<script" not in page.lower()
    # Without its model, the report still opens and says why there are no maps.
    copy = shutil.copytree(tiny_run, tmp_path / "no-model")
    (copy / R.BEST).unlink()
    page = report.build_report(copy, faces_per_cell=1)
    assert f"No maps: the run has no model file ({R.BEST})" in page


@pytest.mark.slow
def test_results_page_shows_the_maps_of_a_cells_faces(tiny_run):
    from streamlit.testing.v1 import AppTest

    from fer import runs as R
    from pages import common

    at = AppTest.from_file(str(APP), default_timeout=180)
    at.session_state[common.RUN] = str(tiny_run)
    at.switch_page("pages/results.py").run()
    assert not at.exception
    metrics = R.read_metrics(tiny_run)
    cm = np.asarray(metrics["confusion_matrix"])
    true, predicted = np.unravel_index(int(cm.argmax()), cm.shape)
    labels = metrics["labels"]
    at.selectbox(key="results_true").select(labels[true])
    at.selectbox(key="results_predicted").select(labels[predicted]).run()
    plain = at.image[0].value
    at.toggle(key="results_saliency").set_value(True).run()
    assert not at.exception
    assert saliency.EXPLANATION in [c.value for c in at.caption]
    [images] = at.image
    assert len(images.value) == len(plain) == min(int(cm[true, predicted]), 40)
    assert images.value != plain  # the maps, not the plain faces
    assert all(labels[predicted] in caption for caption in images.captions)


@pytest.mark.slow
def test_classify_page_lays_the_map_over_a_face():
    import io

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.switch_page("pages/classify.py").run()
    at.toggle(key="whole").set_value(True)
    at.toggle(key="classify_saliency").set_value(True)
    face = face_crop(96)  # a real face: a picture that does not look like one gets no expression
    buffer = io.BytesIO()
    face.save(buffer, format="PNG")
    at.file_uploader(key="uploads").set_value(("face.png", buffer.getvalue(), "image/png")).run()
    assert not at.exception
    assert saliency.EXPLANATION in [c.value for c in at.caption]
    captions = [caption for image in at.image for caption in image.captions]
    assert "Where the model looked" in captions
