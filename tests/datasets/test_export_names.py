"""Exported file names: colliding sample names get unique, stable names; hostile names stay inside the folder."""

import json
import unicodedata

import numpy as np
import pandas as pd
import pytest

from simgen.datasets.formats.coco import export_coco, read_coco
from simgen.datasets.formats.mot import export_mot, open_mot_sequence
from simgen.datasets.formats.names import MAX_STEM_BYTES, clean_stem, export_stems
from simgen.datasets.formats.yolo import export_yolo
from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.sources import open_source

HOSTILE = ["a/x.png", "b/x.png", "../../escape.png", "/tmp/absolute.png", "sub\\..\\..\\win.png", "ctrl\x07\n=.png",
           "..", "", "CON.png", "X.png", "dup", "dup", "é" * 200 + ".png"]


def _unsafe(stem: str) -> bool:
    return (stem in ("", ".", "..") or "/" in stem or "\\" in stem or stem.startswith(".")
            or any(unicodedata.category(ch).startswith("C") for ch in stem)
            or len(stem.encode()) > MAX_STEM_BYTES + 12)


def test_stems_are_safe_unique_and_stable():
    stems = export_stems(HOSTILE)
    assert len({s.casefold() for s in stems}) == len(HOSTILE)  # unique even on case-insensitive file systems
    assert not [s for s in stems if _unsafe(s)]
    assert stems == export_stems(list(HOSTILE))  # deterministic
    # a stem nobody else has is the plain stem (what evaluate matches by); a shared one gets a hash of the full name
    assert export_stems(["a/x.png", "y.png"]) == ["x", "y"]
    assert stems[0].startswith("x_") and stems[1].startswith("x_") and stems[0] != stems[1]
    assert export_stems(["a/x.png", "b/x.png"])[:1] == export_stems(["a/x.png", "c/d/x.tif", "b/x.png"])[:1]
    assert stems[10:12] == [stems[10], stems[10] + "-2"]  # the same name twice
    assert clean_stem("CON.png") == "_CON" and clean_stem("..") == "unnamed"
    assert clean_stem("MOT17-02.v2", strip_suffix=False) == "MOT17-02.v2"


@pytest.fixture
def hostile_h5(tmp_path):
    """One 12x16 sample per HOSTILE name, each with its own grey level and one box at its own x."""
    path = tmp_path / "data" / "hostile.h5"
    path.parent.mkdir()
    w = DatasetWriter(path, kind="tem", class_names=["loop"])
    for k, name in enumerate(HOSTILE):
        box = pd.DataFrame({"x0": [float(k % 10)], "y0": [2.0], "x1": [k % 10 + 4.0], "y1": [8.0], "class": [0]})
        w.append(np.full((12, 16), (k + 1) / 20, np.float32), boxes=box, name=name)
    w.close()
    return path


def _files_outside(root, inside):
    return [p for p in root.rglob("*") if p.is_file() and inside not in p.parents and p.parent.name != "data"]


def test_yolo_export_keeps_every_sample_and_nothing_leaves_the_folder(hostile_h5, tmp_path):
    out = tmp_path / "deep" / "yolo"
    export_yolo(hostile_h5, out, val_fraction=0.3, normalize="none")
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == len(HOSTILE)  # colliding names used to overwrite each other
    assert not _files_outside(tmp_path, out)
    renamed = json.loads((out / "source.json").read_text())["renamed"]
    with open_source(out) as back, open_source(hostile_h5) as ref:
        stems = export_stems(ref.names)  # HDF5 gives the unnamed sample its index, 000007
        assert sorted(back.names) == sorted(stems)
        for k, stem in enumerate(stems):
            j = back.names.index(stem)
            np.testing.assert_allclose(back.image(j), ref.image(k), atol=0.6 / 255)
            np.testing.assert_allclose(back.boxes(j)["x0"], ref.boxes(k)["x0"], atol=1e-3)
            assert renamed.get(stem, ref.names[k]) == ref.names[k]
    assert renamed[stems[0]] == "a/x.png" and renamed[stems[1]] == "b/x.png"


def test_coco_export_gives_every_image_its_own_file(hostile_h5, tmp_path):
    out = tmp_path / "coco"
    export_coco(hostile_h5, out)
    coco = read_coco(out / "annotations.json")
    assert len(set(coco.names)) == len(HOSTILE) == len(list((out / "images").iterdir()))
    assert not _files_outside(tmp_path, out)
    with open_source(hostile_h5) as ref:
        assert coco.names == [f"{s}.png" for s in export_stems(ref.names)]
        for k, name in enumerate(coco.names):  # each file holds its own sample's pixels
            from PIL import Image

            level = np.asarray(Image.open(out / "images" / name)).mean() / 255
            assert level == pytest.approx(ref.image(k).mean(), abs=1 / 255)
    assert coco.boxes["sample"].tolist() == list(range(len(HOSTILE)))


def test_mot_sequence_name_cannot_inject_seqinfo_keys(tmp_path):
    path = tmp_path / "v.h5"
    w = DatasetWriter(path, kind="video")
    for _ in range(3):
        w.append(np.zeros((8, 8), np.float32), tracks=pd.DataFrame(
            {"track_id": [0], "x": [4.0], "y": [4.0], "x0": [2.0], "y0": [2.0], "x1": [6.0], "y1": [6.0]}))
    w.close()
    export_mot(path, tmp_path / "seq", name="evil\nimDir=../../elsewhere\nseqLength=2000000000")
    seq = open_mot_sequence(tmp_path / "seq")
    assert seq.info["imDir"] == "img1" and seq.info["seqLength"] == 3
    assert "\n" not in seq.info["name"] and "/" not in seq.info["name"]
    assert seq.image(0).shape == (8, 8)
