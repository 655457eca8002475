"""Progress bars on export/evaluate/preview/track, a readable ``simgen info`` and ``export yolo --drop-below``."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from clitools import assert_one_line_error, run

from simgen.cli import main
from simgen.commands._readable import readable_lines
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.evaluate.tracking import link_tracks

#: Makes rich draw on the captured stderr as on a terminal (CliRunner's stderr is not a tty).
TERMINAL = {"TTY_COMPATIBLE": "1"}


def _screen(text: str) -> list[str]:
    """What a terminal shows after ``text``: carriage returns, cursor-up and erase-line applied."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", text):
        if token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token == "\r":
            col = 0
        elif token == "\x1b[1A":
            row = max(row - 1, 0)
        elif token == "\x1b[2K":
            lines[row] = ""
        elif not token.startswith("\x1b"):
            lines[row] = lines[row][:col] + token + lines[row][col + len(token):]
            col += len(token)
    return [ln for ln in lines if ln.strip()]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """5 frames of 40x40 px, 3 drifting defects with boxes and tracks, one class."""
    path = tmp_path_factory.mktemp("progress") / "video.h5"
    rng = np.random.default_rng(0)
    pos = rng.uniform(8, 32, (3, 2))
    with DatasetWriter(path, kind="video", class_names=["loop"]) as w:
        for _ in range(5):
            pos = pos + rng.normal(0, 0.5, pos.shape)
            x, y = pos[:, 0], pos[:, 1]
            w.append(rng.random((40, 40)).astype(np.float32),
                     boxes={"x0": x - 3, "y0": y - 3, "x1": x + 3, "y1": y + 3, "class": np.zeros(3, np.int16),
                            "score": np.full(3, 0.9)},
                     tracks={"track_id": np.arange(3), "x": x, "y": y, "size": np.full(3, 6.0)})
    return path


def _files(folder: Path) -> dict:
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# (command line with {data} for the input, output name, what the bar says)
COMMANDS = {
    "export yolo": (["export", "yolo", "{data}", "-o", "out"], "out", "export yolo"),
    "export coco": (["export", "coco", "{data}", "-o", "out"], "out", "export coco"),
    "export mot": (["export", "mot", "{data}", "-o", "out"], "out", "export mot"),
    "preview": (["preview", "{data}", "-o", "out.png", "--n", "3"], "out.png", "preview"),
    "evaluate": (["evaluate", "--pred", "{data}", "--gt", "{data}", "-o", "out", "--no-plots"], "out", "evaluate"),
    "track": (["track", "{data}", "-o", "out.csv", "--search-range", "4"], "out.csv", "linking"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_progress_bar_on_stderr_with_progress_and_none_without(name, video, tmp_path, monkeypatch):
    args, out, description = COMMANDS[name]
    args = [a.replace("{data}", str(video)) for a in args]
    results = {}
    for flag in ("--progress", "--no-progress"):
        folder = tmp_path / flag.strip("-")
        folder.mkdir()
        monkeypatch.chdir(folder)  # same relative output name: stdout must match word for word
        res = CliRunner().invoke(main, [*args, flag], env=TERMINAL, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        results[flag] = res, _files(folder / out)
    on, off = results["--progress"][0], results["--no-progress"][0]
    assert description in on.stderr and "━" in on.stderr
    assert off.stderr == ""
    assert on.stdout == off.stdout and "wrote" in on.stdout and "━" not in on.stdout
    assert results["--progress"][1] == results["--no-progress"][1]  # the same files, byte for byte


def test_progress_is_the_default_and_silent_when_stderr_is_no_terminal(video, tmp_path):
    res = CliRunner().invoke(main, ["export", "coco", str(video), "-o", str(tmp_path / "c")], env=TERMINAL)
    assert res.exit_code == 0 and "export coco" in res.stderr  # on by default
    res = run("export", "coco", video, "-o", tmp_path / "d")  # CliRunner's stderr is not a tty: no bar
    assert res.exit_code == 0 and res.stderr == ""


def test_evaluate_bar_names_its_stages(video, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", "--pred", str(video), "--gt", str(video), "-o", str(tmp_path / "r"),
                                    "--no-plots", "--progress"], env=TERMINAL)
    assert res.exit_code == 0, res.output
    for stage in ("evaluate: read", "evaluate: detection", "evaluate: tracking"):
        assert stage in res.stderr
    assert _screen(res.stderr)[-1].startswith("evaluate ")  # the finished bar is named after the job


def test_a_failure_mid_loop_erases_the_bar_leaving_one_error_line(tmp_path):
    """A YOLO folder whose second image is damaged: the export fails after its bar started."""
    from PIL import Image

    for sub in ("images", "labels"):
        (tmp_path / "yf" / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(tmp_path / "yf" / "images" / f"a{i}.png")
        (tmp_path / "yf" / "labels" / f"a{i}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (tmp_path / "yf" / "images" / "a1.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    res = CliRunner().invoke(main, ["export", "yolo", str(tmp_path / "yf"), "-o", str(tmp_path / "y"), "--progress"],
                             env=TERMINAL)
    assert res.exit_code == 2 and "export yolo" in res.stderr  # the bar was drawn ...
    screen = _screen(res.stderr)
    assert len(screen) == 1 and screen[0].startswith("Error: ") and "a1.png" in screen[0], screen  # ... and erased
    assert not (tmp_path / "y").exists()
    # an error before any work: one line, bar or no bar
    res = CliRunner().invoke(main, ["export", "yolo", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "z")],
                             env=TERMINAL)
    assert res.exit_code == 2 and res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1


def test_link_tracks_numbers_tracks_the_same_every_run_and_as_trackpy_links():
    """trackpy's particle numbering varies from run to run; link_tracks numbers by first detection."""
    import trackpy

    rng = np.random.default_rng(1)
    det = pd.concat([pd.DataFrame({"sample": f, "x": rng.random(40) * 100, "y": rng.random(40) * 100})
                     for f in (0, 1, 2, 4, 5, 9)], ignore_index=True)  # gaps: empty frames count for memory
    runs = [link_tracks(det, search_range=6, memory=2, progress=p) for p in (False, True, False, False)]
    for other in runs[1:]:
        pd.testing.assert_frame_equal(other, runs[0])
    ids = runs[0]["track_id"].to_numpy()
    assert ids[0] == 0 and (np.maximum.accumulate(ids)[1:] - np.maximum.accumulate(ids)[:-1] <= 1).all()
    trackpy.quiet()
    ref = trackpy.link(det, 6.0, pos_columns=["x", "y"], t_column="sample", memory=2,
                       link_strategy="nonrecursive").reset_index(drop=True)
    np.testing.assert_array_equal(runs[0][["sample", "x", "y"]].to_numpy(), ref[["sample", "x", "y"]].to_numpy())
    assert (pd.crosstab(ids, ref["particle"].to_numpy()).to_numpy() > 0).sum(axis=1).max() == 1  # same tracks
    assert len(np.unique(ids)) == ref["particle"].nunique()


# -- simgen info -----------------------------------------------------------------------------------------------
def _block(output: str) -> list[str]:
    lines = output.splitlines()
    return lines[lines.index("generator:") + 1:]


def _assert_aligned(lines: list[str], indent: int) -> None:
    """Scalar lines at one indent put their values in one column."""
    pad = " " * indent
    mine = [ln for ln in lines if ln.startswith(pad) and not ln.startswith(pad + " ") and not ln.endswith(":")]
    assert mine
    columns = {len(ln) - len(ln.split(":", 1)[1].lstrip()) for ln in mine}
    assert len(columns) == 1, mine


@pytest.mark.parametrize("kind, args", [
    ("tem", ["--n", "1", "--size", "32"]),
    ("film", ["--n", "1", "--size", "32", "--steps", "5", "--min-separation", "6", "--margin", "4",
              "--box-size", "6"]),
])
def test_info_prints_the_generator_settings_as_an_aligned_block(kind, args, tmp_path):
    path = tmp_path / f"{kind}.h5"
    res = run("simulate", kind, *args, "--seed", 2, "--no-progress", "-o", path)
    assert res.exit_code == 0, res.output
    res = run("info", path)
    assert res.exit_code == 0, res.output
    block = _block(res.output)
    assert not any(c in ln for ln in block for c in '{"')  # no JSON dump
    assert block[0] == "  config:" and any(re.fullmatch(rf"  sampler: +{kind}", ln) for ln in block)
    _assert_aligned(block, 2)
    config = [ln for ln in block if ln.startswith("    ")]
    _assert_aligned(config, 4)
    with open_dataset(path) as ds:
        settings = ds.attrs["generator"]["config"]
    assert len(config) == len(settings)
    shown = dict(re.match(r"\s+(\S+):\s+(.*)", ln).groups() for ln in config)
    assert list(shown) == sorted(settings)
    assert shown["size"] == "32"
    if kind == "tem":
        assert shown["classes"] == "[black_dot, loop111, loop100]"
        assert shown["tilt_max"] == f"{settings['tilt_max']:.6g}" and shown["preset"] == "none"
        assert shown["density"] == "[{:.1f}, {:.1f}]".format(*settings["density"])  # [150.0, 1500.0]
    else:
        assert shown["steps"] == "5" and shown["box_size"] == "6.0" and shown["model"] == "random"
    assert json.loads(run("info", path, "--json").output)["generator"]["config"] == settings  # machines: JSON


def test_readable_lines_indent_nested_settings_and_shorten_long_lists():
    lines = readable_lines({"b": {"inner": 1, "deeper": {"x": None}}, "a": list(range(120)), "flag": True,
                            "ratio": 0.123456789, "pair": [1.0, 2.5]})
    assert lines == [
        "a:      [0, 1, 2, 3, ...] (120 items)",
        "b:",
        "  deeper:",
        "    x:  none",
        "  inner:   1",
        "flag:   true",
        "pair:   [1.0, 2.5]",
        "ratio:  0.123457",
    ]


# -- export yolo --drop-below (was --min-box) --------------------------------------------------------------------
@pytest.fixture()
def small_boxes(tmp_path):
    path = tmp_path / "boxes.h5"
    with DatasetWriter(path, kind="tem", class_names=["loop"]) as w:
        for _ in range(2):
            w.append(np.full((32, 32), 0.5, np.float32),
                     boxes={"x0": np.array([2.0, 10.0]), "y0": np.array([2.0, 10.0]), "x1": np.array([4.0, 20.0]),
                            "y1": np.array([4.0, 20.0]), "class": np.zeros(2, np.int16)})
    return path


def test_drop_below_drops_small_boxes_and_min_box_is_its_deprecated_alias(small_boxes, tmp_path):
    new = run("export", "yolo", small_boxes, "-o", tmp_path / "new", "--drop-below", 3, "--val-fraction", 0)
    assert new.exit_code == 0, new.output
    assert "boxes: 2 written, 2 dropped; 2 smaller than --drop-below (3 px)" in new.stdout
    assert "deprecated" not in new.output
    old = run("export", "yolo", small_boxes, "-o", tmp_path / "old", "--min-box", 3, "--val-fraction", 0)
    assert old.exit_code == 0, old.output
    warning = [ln for ln in old.stderr.splitlines() if ln.strip()]
    assert warning == ["Warning: --min-box is deprecated and will be removed in the next release; use --drop-below"]
    assert old.stdout.replace("old", "new") == new.stdout
    labels = {f: b for f, b in _files(tmp_path / "old").items() if f.startswith("labels")}
    assert labels == {f: b for f, b in _files(tmp_path / "new").items() if f.startswith("labels")}
    assert all(len(b.splitlines()) == 1 for b in labels.values())
    default = run("export", "yolo", small_boxes, "-o", tmp_path / "default", "--val-fraction", 0)
    assert "boxes: 4 written, 0 dropped" in default.stdout  # default 1 px keeps the 2 px boxes
    both = run("export", "yolo", small_boxes, "-o", tmp_path / "both", "--drop-below", 3, "--min-box", 3)
    assert both.exit_code == 2 and "give --drop-below only" in both.output and not (tmp_path / "both").exists()
    for flag in ("--drop-below", "--min-box"):
        assert_one_line_error(run("export", "yolo", small_boxes, "-o", tmp_path / "nan", flag, "nan"))
    assert "--drop-below PX" in run("export", "yolo", "--help").output
