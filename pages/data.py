"""Data: choose the dataset, see what it holds, filter faces by detector score, export the processed faces.

The dataset in use is what the chooser shows: the demo, a typed path that passes the data-roots
check and loads, or an uploaded zip once it is safely extracted. Input that cannot be used leaves
the previous dataset in place and says why. Counts and the histogram come from the manifest alone
(instant at any threshold); only sample faces and the export touch pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from fer import datasets, export, paths, preprocess, splits, uploads
from fer.config import MAX_SIZE, MIN_SIZE
from pages import common

# Page-local session keys (widget keys are named here so tests can find the widgets).
SOURCE = "data_source"
PATH_INPUT = "data_path"
ZIP_INPUT = "data_zip"
ZIP_DONE = "data_zip_done"  # {"id": uploaded file id, "root": dataset path or None, "error": str or None}
COLUMNS_INPUT = "data_columns"
MAPPED = "data_mapped"  # {original CSV path: path of its copy with the visitor's column mapping}
THRESHOLD = "data_threshold"
EXPORT_SIZE = "data_export_size"
EXPORT_SIZE_FOR = "data_export_size_for"  # the dataset the size was set for
EXPORT_BUTTON = "data_export"
EXPORT_REQUESTED = "data_export_requested"
EXPORTED = "data_exported"  # what the last export made, with the settings it was made for
DUPLICATES = "data_duplicates"  # {"settings": the export settings they were found for, "table": DataFrame}
DUPLICATES_BUTTON = "data_find_duplicates"
DUPLICATES_REQUESTED = "data_find_duplicates_requested"

DEMO, SERVER, UPLOAD = "Built-in demo", "A folder or CSV on the server", "Upload a .zip"
SAMPLES_PER_LABEL = 6
# Chart colours that read on the light theme and on the dark one (contrast 3:1 or more on both
# backgrounds); Streamlit follows the browser's preference, so a page cannot know which it gets.
COLOURS = {"kept": "#3b6fd8", "dropped": "#878e9a"}
THRESHOLD_COLOUR = "#d9672a"
SAMPLE_SIZE = 96


@st.cache_data(show_spinner="Cropping sample faces...", max_entries=32)
def sample_faces(path: str, min_confidence: float, faces: int) -> dict:
    """Cached by dataset, threshold and face count (a dataset edited on disk changes the count)."""
    return export.sample_faces(
        common.load_dataset(path), SAMPLES_PER_LABEL, size=SAMPLE_SIZE, min_confidence=min_confidence
    )


@st.cache_data(show_spinner=False, max_entries=32)
def face_size(path: str, faces: int) -> int:
    """The export size to start at for a dataset, cached by dataset and face count."""
    return export.default_size(common.load_dataset(path))


@st.cache_data(show_spinner=False, max_entries=64)
def prepared_folder(path: str, stamp: float, faces: int, size: int) -> str:
    """Where the cache keeps the dataset's faces at `size` (naming it stats every photo, hence cached)."""
    return str(export.prepared_folder(common.load_dataset(path), preprocess.PrepSettings(size=size)))


def duplicates_of(prepared: preprocess.Prepared) -> pd.DataFrame:
    split = splits.assign(prepared.faces)
    return splits.cross_split_duplicates(prepared.faces, split, prepared.faces["hash"])


def show_duplicates(dataset: datasets.Dataset, settings: dict, kept: int) -> None:
    """Identical processed faces in more than one split. Finding them needs every kept face processed:
    done at once when the cache already holds them (an export, a training, an earlier visit made them),
    else on the visitor's click, with a progress bar."""
    found = st.session_state.get(DUPLICATES)
    if not found or found["settings"] != settings:
        path, size = settings["dataset"], settings["size"]
        folder = Path(prepared_folder(path, common.dataset_stamp(path), len(dataset.faces), size))
        if not (st.session_state.pop(DUPLICATES_REQUESTED, False) or (folder / "meta.json").is_file()):
            st.write(
                f"Found by comparing the processed faces ({size} x {size}), which are not made yet: "
                "processing them also makes the export below quicker."
            )
            st.button(
                f"Process {kept:,} faces and look for identical images",
                key=DUPLICATES_BUTTON,
                on_click=lambda: st.session_state.update({DUPLICATES_REQUESTED: True}),
            )
            return
        bar = st.progress(0.0, text="Processing faces...")
        try:
            prepared = preprocess.prepare(
                dataset,
                preprocess.PrepSettings(size=size),
                min_confidence=settings["threshold"],
                workers=1,  # one process: see the export below
                progress=lambda done, total: bar.progress(
                    done / max(total, 1), text=f"Processing faces: {done:,} / {total:,}"
                ),
            )
        except (datasets.DatasetError, ValueError, OSError) as error:
            bar.empty()
            st.error(f"The faces could not be processed: {common.md(error)}")
            return
        bar.empty()
        found = {"settings": settings, "table": duplicates_of(prepared)}
        st.session_state[DUPLICATES] = found
    duplicates = found["table"]
    if len(duplicates):
        st.warning(
            f"{duplicates['group'].nunique():,} identical images sit in more than one split "
            f"({len(duplicates):,} faces): a model is partly tested on faces it trained on."
        )
        st.dataframe(duplicates, hide_index=True, width="stretch")
    else:
        st.write(f"No identical image sits in more than one split ({kept:,} kept faces compared).")


def under(path: str, folder: Path) -> bool:
    return path != "demo" and Path(path).is_relative_to(folder.resolve())


def switch_to(candidate: str) -> bool:
    """Use `candidate` if it loads and its photos stay inside the data folders; else say why."""
    try:
        dataset = common.load_dataset(candidate)
    except datasets.DatasetError as error:
        if candidate.lower().endswith(".csv"):
            return ask_for_columns(candidate, error)
        st.error(
            f"{common.md(error)}. Still using {common.md(common.dataset_label(st.session_state[common.DATASET]))}."
        )
        return False
    except Exception as error:  # noqa: BLE001 - a visitor's file can be anything; never a traceback
        st.error(
            f"{common.md(candidate)} could not be read ({type(error).__name__}: {common.md(error)}). "
            "Choose another dataset."
        )
        return False
    outside = uploads.photos_outside(dataset, paths.data_roots())
    if outside:
        files = "1 of its files resolves" if len(outside) == 1 else f"{len(outside):,} of its files resolve"
        st.error(
            f"{common.md(Path(candidate).name)} is refused: {files} outside the folders this server serves "
            f"datasets from, through a symbolic link or a path (first: {common.md(', '.join(outside[:3]))}). "
            f"{common.md(paths.served_folders())}. Keep the photos inside the dataset's folder, as files, "
            f"with relative paths, or {common.md(paths.HOW_TO_ADD)}."
        )
        return False
    if candidate != st.session_state[common.DATASET]:
        st.session_state[common.DATASET] = candidate
        # A threshold belongs to one detector's scores: a new dataset starts with every face kept.
        st.session_state[common.MIN_CONFIDENCE] = 0.0
        st.session_state.pop(THRESHOLD, None)
    return True


def ask_for_columns(csv_path: str, error: Exception) -> bool:
    """A CSV whose columns could not be guessed: show why and take a mapping such as image=file,label=mood."""
    why = st.empty()  # cleared once a mapping works, so the page does not show a problem it solved
    why.error(common.md(error))
    text = st.text_input(
        "Column mapping (field=column, comma-separated)",
        key=COLUMNS_INPUT,
        placeholder="image=file,label=mood,confidence=score,x=bx,y=by,w=bw,h=bh",
        help=f"Fields: {', '.join(datasets.CSV_GUESSES)}. Fields left out are guessed from the column names.",
    )
    if not text.strip():
        return False
    try:
        mapped = uploads.remap_csv(csv_path, datasets.parse_columns(text))
    except (datasets.DatasetError, ValueError, OSError) as problem:
        st.error(f"The mapping does not work: {common.md(problem)}")
        return False
    mapped = mapped.resolve()
    st.session_state.setdefault(MAPPED, {})[csv_path] = str(mapped)
    if switch_to(str(mapped)):
        why.empty()
        return True
    return False


def choose_dataset() -> None:
    current = st.session_state[common.DATASET]
    if SOURCE not in st.session_state:  # first visit, or back from another page
        st.session_state[SOURCE] = (
            DEMO if current == "demo" else UPLOAD if under(current, paths.uploads_dir()) else SERVER
        )
    choice = st.radio("Dataset", [DEMO, SERVER, UPLOAD], key=SOURCE, horizontal=True)
    candidate = None
    if choice == DEMO:
        candidate = "demo"
    elif choice == SERVER:
        st.session_state.setdefault(PATH_INPUT, "" if current == "demo" else current)
        text = st.text_input(
            "Dataset path on the server",
            key=PATH_INPUT,
            placeholder=str(paths.data_dir() / "my-dataset"),
            help="A folder (ExpW with label.lst, or image folders per label, optionally under train/ val/ "
            "test/) or a CSV (FER2013's, or image paths with labels), under one of: "
            + ", ".join(common.md(r) for r in paths.data_roots())
            + f". A relative path is read from {common.md(paths.PROJECT)}.",
        )
        if text.strip():
            try:
                candidate = str(paths.check_dataset_path(text))
            except (ValueError, OSError, RuntimeError) as error:  # PathError, or a path the OS refuses
                st.error(f"{common.md(error)}. Still using {common.md(common.dataset_label(current))}.")
    else:
        file = st.file_uploader(
            "Dataset as a .zip (ExpW folder, image folders per label, FER2013 CSV, or a CSV with images)",
            type=["zip"],
            key=ZIP_INPUT,
        )
        if file is not None:
            done = st.session_state.get(ZIP_DONE)
            if not done or done["id"] != file.file_id:
                with st.spinner(f"Checking and extracting {common.md(file.name)}..."):
                    try:
                        done = {
                            "id": file.file_id,
                            "root": str(uploads.save_upload(file, file.name).resolve()),
                            "error": None,
                        }
                    except (
                        uploads.UploadError,
                        OSError,
                    ) as error:  # OSError: e.g. the uploads folder is full
                        done = {"id": file.file_id, "root": None, "error": str(error)}
                st.session_state[ZIP_DONE] = done
            if done["error"]:
                st.error(
                    f"{common.md(done['error'])}. Still using {common.md(common.dataset_label(current))}."
                )
            candidate = done["root"]
        elif under(current, paths.uploads_dir()):
            st.caption("Using an earlier upload; upload another zip to replace it.")
    if candidate:
        candidate = st.session_state.get(MAPPED, {}).get(candidate, candidate)
        if candidate != current:
            switch_to(candidate)


# Page ---------------------------------------------------------------------------------------------

common.init_session()  # also here: a page opened by its own URL may run before the entry file's defaults

st.title("Data")
linked = common.read_dataset_url()
if linked:  # the chooser and the slider start again from what the link holds
    for key in (SOURCE, PATH_INPUT, THRESHOLD):
        st.session_state.pop(key, None)
choose_dataset()

path = st.session_state[common.DATASET]
try:
    dataset = common.load_dataset(path)
    facts = common.dataset_summary(path)
except (datasets.DatasetError, ValueError, OSError) as error:
    st.error(
        f"The dataset {common.md(path)} could not be read: {common.md(error)}. Choose another one above."
    )
    st.stop()

st.caption(
    f"Using **{common.md(common.dataset_label(path))}**: {common.md(facts['format'])} format, "
    f"{facts['faces']:,} faces in {facts['photos']:,} photos"
    + ("" if path == "demo" else f" — {common.md(path, code=True)}")
)

# Threshold and counts -------------------------------------------------------------------------------

st.header("Label counts")
confidence = facts["confidence"]
if confidence is None:
    threshold = 0.0
    st.session_state[common.MIN_CONFIDENCE] = 0.0
else:
    top = float(math.ceil(confidence["max"]))
    if not 0 <= st.session_state.get(THRESHOLD, -1.0) <= top:  # first visit, or a dataset with lower scores
        stored = float(st.session_state[common.MIN_CONFIDENCE])
        st.session_state[THRESHOLD] = min(max(stored, 0.0), top)
    threshold = st.slider(
        "Minimum detector score",
        min_value=0.0,
        max_value=top,
        step=0.5 if top >= 20 else 0.01,
        format="%.1f" if top >= 20 else "%.2f",
        key=THRESHOLD,
        help="The detector score says how sure the face detector that drew the box was that it holds a "
        "face (ExpW's run from 0 to about 126). Faces under this score are dropped from training and "
        "export; in-the-wild datasets hold many blurred, tiny or turned faces with low scores.",
    )
    st.session_state[common.MIN_CONFIDENCE] = threshold
common.write_url(common.dataset_url())
facts = common.dataset_summary(path, threshold)

kept_col, dropped_col, faces_col = st.columns(3)
kept_col.metric("Kept", f"{facts['kept']:,}")
dropped_col.metric("Dropped", f"{facts['dropped']:,}")
faces_col.metric("Faces", f"{facts['faces']:,}")

counts = pd.DataFrame(
    [
        (common.plot_text(label), status, row[key] if key == "kept" else row["faces"] - row["kept"])
        for label, row in facts["per_label"].items()
        for status, key in (("kept", "kept"), ("dropped", "dropped"))
    ],
    columns=["label", "faces are", "faces"],
)
figure = px.bar(
    counts,
    x="label",
    y="faces",
    color="faces are",
    barmode="stack",
    color_discrete_map=COLOURS,
    category_orders={"label": [common.plot_text(label) for label in facts["labels"]]},
)
common.chart(figure)
split_counts = " · ".join(f"{name} {facts['per_split'][name]['kept']:,}" for name in splits.SPLITS)
st.caption(f"Kept faces per split: {split_counts} (split: {common.md(facts['split_source'])}).")

if confidence is None:
    st.info("This dataset records no detector score, so there is nothing to filter: every face is kept.")
else:
    scores = dataset.faces["confidence"].dropna()
    histogram = px.histogram(
        pd.DataFrame(
            {
                "detector score": scores,
                "faces are": (scores >= threshold).map({True: "kept", False: "dropped"}),
            }
        ),
        x="detector score",
        color="faces are",
        nbins=60,
        color_discrete_map=COLOURS,
        labels={"count": "faces"},
    )
    histogram.add_vline(
        x=threshold, line_dash="dash", line_color=THRESHOLD_COLOUR, annotation_text=f"threshold {threshold:g}"
    )
    histogram.update_layout(yaxis_title="faces", bargap=0.05)
    st.subheader("Detector score")
    common.chart(histogram)

# Samples --------------------------------------------------------------------------------------------

st.header("Sample faces")
st.caption(
    f"Up to {SAMPLES_PER_LABEL} kept faces per label, cropped from their photos, grayscale, "
    f"{SAMPLE_SIZE}x{SAMPLE_SIZE}: what the model sees. Under each face: its detector score "
    "(or, where the dataset records none, its photo's name, shortened in the middle, or its CSV row)."
)
for label, faces in sample_faces(path, threshold, facts["faces"]).items():
    name_col, faces_col = st.columns([1, 7], vertical_alignment="center")
    name_col.markdown(f"**{common.md(label)}**")
    if faces:
        faces_col.image(  # image captions are Markdown too
            [image for image, _ in faces], caption=[common.md(text) for _, text in faces], width=SAMPLE_SIZE
        )
    else:
        faces_col.caption("no kept face could be cropped")

# Reports --------------------------------------------------------------------------------------------

st.header("Skipped faces")
if facts["skipped"]:
    st.write(f"{facts['skipped']:,} faces listed in the dataset were left out while reading it:")
    st.dataframe(
        pd.DataFrame(list(facts["skipped_reasons"].items()), columns=["reason", "faces"]), hide_index=True
    )
    with st.expander("Every skipped face"):
        st.dataframe(dataset.skipped, hide_index=True, width="stretch")
else:
    st.write("Every face listed in the dataset could be read.")
st.caption("Photos that turn out unreadable when decoded are found when the faces are processed (below).")

# A new dataset (or a visit back, after Streamlit dropped the widget's value) starts at its faces' size.
if st.session_state.get(EXPORT_SIZE_FOR) != path or EXPORT_SIZE not in st.session_state:
    st.session_state[EXPORT_SIZE] = face_size(path, facts["faces"])
    st.session_state[EXPORT_SIZE_FOR] = path

st.header("Identical images across splits")
duplicates_box = st.container()  # filled at the end of the page, once an export may have processed the faces

# Export ---------------------------------------------------------------------------------------------

st.header("Process and export faces")
size = st.number_input(
    "Image size (pixels per side)",
    min_value=MIN_SIZE,
    max_value=MAX_SIZE,
    step=export.SIZE_STEP,
    key=EXPORT_SIZE,
    help="Starts at the dataset's own face size: FER2013's faces are 48 x 48; for photos with face boxes, "
    f"the median box, rounded to {export.SIZE_STEP} pixels and kept within {MIN_SIZE}-{MAX_SIZE}; "
    f"{export.REPORT_SIZE} (the report's size) where it cannot be told. A larger size adds pixels, not detail.",
)
settings = {"dataset": path, "size": int(size), "threshold": threshold}
# The click is kept by a callback, not read from the button's return value, so that any rerun
# between the click and this line cannot lose it.
st.button(
    f"Process {facts['kept']:,} faces and build a zip",
    key=EXPORT_BUTTON,
    type="primary",
    on_click=lambda: st.session_state.update({EXPORT_REQUESTED: True}),
)
if st.session_state.pop(EXPORT_REQUESTED, False):
    bar = st.progress(0.0, text="Processing faces...")

    def processing(done: int, total: int) -> None:
        bar.progress(0.5 * done / max(total, 1), text=f"Processing faces: {done:,} / {total:,}")

    def writing(done: int, total: int) -> None:
        bar.progress(0.5 + 0.5 * done / max(total, 1), text=f"Writing images: {done:,} / {total:,}")

    try:
        # One process: Streamlit installs the page script as __main__, so worker processes spawned
        # from here would each start by running the whole app again (imports, TensorFlow and all).
        prepared = preprocess.prepare(
            dataset,
            preprocess.PrepSettings(size=int(size)),
            min_confidence=threshold,
            workers=1,
            progress=processing,
        )
        stem = uploads.safe_stem(Path(path).name)
        name = f"{stem}-faces-{int(size)}px-min{threshold:g}-{prepared.cache_dir.name[-8:]}.zip"
        target = paths.data_dir() / "exports" / name
        if not target.is_file():
            export.export_zip(prepared, target, progress=writing)
    except (datasets.DatasetError, ValueError, OSError) as error:
        bar.empty()
        st.error(f"The faces could not be processed: {common.md(error)}")
        st.stop()
    bar.progress(1.0, text=f"Done: {len(prepared.faces):,} faces")
    known = pd.MultiIndex.from_frame(dataset.skipped[datasets.SKIPPED_COLUMNS].astype(str))
    unreadable = prepared.skipped[
        ~pd.MultiIndex.from_frame(prepared.skipped[datasets.SKIPPED_COLUMNS].astype(str)).isin(known)
    ]
    st.session_state[EXPORTED] = settings | {
        "zip": str(target),
        "faces": len(prepared.faces),
        "unreadable": unreadable.reset_index(drop=True),
    }
    st.session_state[DUPLICATES] = {"settings": settings, "table": duplicates_of(prepared)}

exported = st.session_state.get(EXPORTED)
if exported and {k: exported[k] for k in settings} == settings and Path(exported["zip"]).is_file():
    zip_path = Path(exported["zip"])
    megabytes = zip_path.stat().st_size / 1e6
    st.download_button(
        f"Download {exported['faces']:,} faces ("
        + (f"{megabytes:,.1f} MB" if megabytes >= 1 else f"{megabytes * 1000:,.0f} kB")
        + " zip)",
        data=zip_path.read_bytes,
        file_name=zip_path.name,
        mime="application/zip",
        key="data_download",
        on_click="ignore",
        icon=":material/download:",
    )
    unreadable = exported["unreadable"]
    if len(unreadable):
        st.write(f"{len(unreadable):,} faces could not be processed:")
        st.dataframe(unreadable, hide_index=True, width="stretch")
    else:
        st.write("Every kept face was processed.")
elif exported:
    st.caption("The settings changed since the last export: process again to get a matching zip.")

with duplicates_box:
    show_duplicates(dataset, settings, facts["kept"])
