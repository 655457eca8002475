"""sim2real as named steps: each runs alone, the real folder is opened once, the default trains fixed epochs.

No YOLO is trained here: a LoG detector stands in for the trained model (the end-to-end run with a
real YOLO is ``tests/train/test_yolo.py::test_sim2real_smoke``).
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from fakedata import disc_folder

from simgen.cli import main
from simgen.datasets import sources
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.experiments import sim2real_real, sim2real_tem
from simgen.experiments.sim2real_compare import NOISES, robustness_study, tune_baseline
from simgen.experiments.sim2real_real import RealPredictions, detect_real, load_real
from simgen.experiments.sim2real_tem import (
    Sim2RealConfig,
    Sim2RealResult,
    generate_synthetic,
    match_look,
    run_sim2real,
    score_synthetic,
    training_hours,
)
from simgen.train.baselines.log import LogParams, detect_log


def _yolo_folder(root, sizes=((96, 96), (64, 80), (80, 64))):
    return disc_folder(root, sizes)


class _LogDetector:
    """Stands in for a trained YOLO (``detect``, ``conf_f1``, ``class_names``): LoG blobs."""

    conf_f1 = 0.05
    class_names = ["loop"]

    def __init__(self, *args, **kwargs):
        self.params = LogParams(min_sigma=1.5, max_sigma=5.0, threshold=0.02)

    def detect(self, image):
        return detect_log(image, self.params)


def _small(**changes):
    return Sim2RealConfig.preset("small").replace(n_train=8, n_val=4, match_images=1, **changes)


def test_default_trains_a_fixed_number_of_epochs():
    cfg = Sim2RealConfig()
    assert cfg.epochs == 30 and cfg.time_budget_minutes is None
    assert cfg.yolo_config().epochs == 30 and cfg.yolo_config().hours == 0  # no wall-clock cap
    assert cfg.kfold_epochs == 60  # the real-trained comparison keeps its README setting
    help_text = CliRunner().invoke(main, ["sim2real", "--help"]).output
    assert "--time-budget" in help_text and "fixed number of epochs" in help_text
    with pytest.raises(ParameterError, match="time_budget_minutes"):
        cfg.replace(time_budget_minutes=0).validate()


def test_a_time_budget_too_small_to_train_fails_before_any_output(tmp_path):
    real = _yolo_folder(tmp_path / "real")
    cfg = _small(size=128, time_budget_minutes=1.0)
    with open_source(real) as src:
        assert training_hours(_small(), load_real(src)) == 0.0  # no budget: no cap
        with pytest.raises(ParameterError, match="--time-budget"):
            training_hours(cfg, load_real(src))
    with pytest.raises(ParameterError, match="--time-budget"):
        run_sim2real(real, tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()
    command = main.get_command(None, "sim2real")
    for flag in ("--time-budget", "--budget"):  # --budget: the name of the old (default-on) budget
        ctx = command.make_context("sim2real", ["--real", str(real), "-o", str(tmp_path / "x"), flag, "40"])
        assert ctx.params["time_budget"] == 40.0


def test_steps_run_alone(tmp_path):
    real_dir = _yolo_folder(tmp_path / "real")
    cfg = _small()
    with open_source(real_dir) as src:
        real = load_real(src)
        assert real.names == ["im0", "im1", "im2"] and len(real.gt) == 12 and set(real.gt["class"]) == {0}
        look = match_look(real, cfg)
        assert look.estimates and look.tem.size == 64
        data = generate_synthetic(tmp_path / "out", look, cfg, progress=False)
        assert data.train.exists() and data.val.exists()
        baseline = tune_baseline(real, tmp_path / "out", cfg)
        assert baseline.params is not None and baseline.methods["log_baseline"]["f1"] > 0.5
        det = _LogDetector()
        pred = detect_real(det, real)
        preds = RealPredictions(pred, det.conf_f1, len(real), 1.0, sum(real.megapixels), tmp_path / "p.h5", det)
        methods = score_synthetic(preds, real)
        assert set(methods) == {"synthetic_yolo", "synthetic_yolo_loo_threshold"}
        assert [r["image"] for r in methods["synthetic_yolo"]["per_image"]] == real.names
        by_size = methods["synthetic_yolo"]["errors_by_size"]  # the report's where-are-the-errors table
        assert sum(r["fp"] for r in by_size) == methods["synthetic_yolo"]["fp"]
        assert sum(r["missed"] for r in by_size) == methods["synthetic_yolo"]["fn"]
        assert sum(r["n_gt"] for r in by_size) == len(real.gt)
        robustness, notes = robustness_study(real, preds, baseline.params, cfg)
        assert set(robustness) == set(NOISES) and not notes


def test_driver_opens_the_real_folder_once(tmp_path, monkeypatch):
    real = _yolo_folder(tmp_path / "real")
    opened = []
    init = sources.Source.__init__

    def counting_init(self, path, *args, **kwargs):
        opened.append(str(path))
        init(self, path, *args, **kwargs)

    monkeypatch.setattr(sources.Source, "__init__", counting_init)
    weights = tmp_path / "fake.pt"
    monkeypatch.setattr(sim2real_tem, "train_synthetic", lambda *a, **k: weights)  # no YOLO training here
    monkeypatch.setattr(sim2real_real, "YoloDetector", _LogDetector)
    out = tmp_path / "s2r"
    result = run_sim2real(real, out, _small().replace(adapt=()), progress=False)  # adaptation needs real weights
    assert opened.count(str(real)) == 1, opened
    assert isinstance(result, Sim2RealResult) and result.weights == weights
    assert set(result.methods) == {"synthetic_yolo", "synthetic_yolo_loo_threshold", "log_baseline",
                                   "log_baseline_insample", "log_synthetic"}
    assert set(result.timing) == {"match", "generate", "judge", "train", "predict", "baseline", "robustness",
                                  "synthetic_log", "total"}
    report = json.loads((out / "report.json").read_text())
    assert report["methods"].keys() == result.methods.keys() and report["config"]["epochs"] == 1
    assert result["verdict"] == result.verdict == report["verdict"]  # dict-style access still works
    for name in ("report.md", "pr_curves.png", "examples.png", "synthetic_examples.png", "match.json",
                 "pred_synthetic_yolo.h5", "log_params.json"):
        assert (out / name).exists(), name
    assert "## Synthetic-only YOLO: errors by box size" in (out / "report.md").read_text()
    assert len(report["methods"]["synthetic_yolo"]["errors_by_size"]) == 8


def test_judge_step_reports_the_realism_auc_and_resume_reuses_it(tmp_path, monkeypatch):
    """The judge runs on the synthetic training images vs the real pixels after ``generate``: its
    report lands in realism/, report.json/md and the summary carry its AUC; ``--resume`` reuses the
    stored judgement; ``--no-judge`` skips the step."""
    real = _yolo_folder(tmp_path / "real")
    monkeypatch.setattr(sim2real_tem, "train_synthetic", lambda *a, **k: tmp_path / "fake.pt")  # no YOLO here
    monkeypatch.setattr(sim2real_real, "YoloDetector", _LogDetector)
    cfg = _small(baseline=False, robustness=False, synthetic_log=False)
    out = tmp_path / "s2r"
    result = run_sim2real(real, out, cfg, progress=False)
    stored = json.loads((out / "realism" / "realism.json").read_text())
    assert (out / "realism" / "realism.md").exists() and (out / "realism" / "sheet.png").exists()
    assert 0.0 <= stored["auc"] <= 1.0 and stored["settings"]["folds"] == 3  # 3 real images: 3 folds
    assert stored["n_images"] == {"real": 3, "synthetic": 8} and stored["settings"]["patch"] == 32
    report = json.loads((out / "report.json").read_text())
    assert report["realism"]["auc"] == stored["auc"] and report["realism"]["auc_std"] == stored["auc_std"]
    assert report["realism"]["spectrum_distance"] == stored["distance"]["psd"]
    line = f"Realism judge: synthetic training images vs the real images, AUC {stored['auc']:.3f} ± "
    assert line in (out / "report.md").read_text() and line in result.summary_text
    assert list(result.timing)[:4] == ["match", "generate", "judge", "train"]  # before training: in its budget

    mtime = (out / "realism" / "realism.json").stat().st_mtime_ns
    again = run_sim2real(real, out, cfg, resume=True, progress=False)
    assert (out / "realism" / "realism.json").stat().st_mtime_ns == mtime and again.realism == result.realism

    res = CliRunner().invoke(main, ["sim2real", "--real", str(real), "-o", str(tmp_path / "off"), "--config", "small",
                                    "--n-train", "8", "--no-baseline", "--no-robustness", "--no-synthetic-log",
                                    "--no-judge", "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "off" / "report.json").read_text())
    assert report["realism"] is None and "judge" not in report["timing"] and not (tmp_path / "off" / "realism").exists()
    assert "Realism judge" not in res.output


def test_judge_is_skipped_with_a_note_when_folds_cannot_split_the_real_images(tmp_path):
    from simgen.experiments.sim2real_judge import judge_synthetic

    with open_source(_yolo_folder(tmp_path / "real", sizes=((96, 96),))) as src:
        summary, notes = judge_synthetic(tmp_path / "unused.h5", load_real(src), tmp_path / "out", _small())
    assert summary is None and "realism judge skipped" in notes[0] and not (tmp_path / "out").exists()
    with pytest.raises(ParameterError, match="judge setting"):
        _small(judge_settings={"max_images": 3}).validate()


def test_broad_scale_calibration_hits_box_side_targets():
    """The box sides of the calibrated broad policy land near the promised p5/p95 on renders
    the calibration never saw (another seed), and more large boxes come with count_exponent < 2."""
    from simgen.experiments.sim2real_tem import box_sides, calibrate_box_sides
    from simgen.simulate.tem import TemConfig

    base = TemConfig(size=128, pixel_nm=(0.3, 1.2), size_nm=(6.0, 6.0), density=(900.0, 900.0),
                     max_size_px=64, box_margin=1.0)
    physical = box_sides(base, seed=5, n_images=24)
    more_large = box_sides(base.replace(count_exponent=0.5), seed=5, n_images=24)
    assert np.percentile(more_large, 90) > np.percentile(physical, 90)
    tem = calibrate_box_sides(base.replace(count_exponent=1.0), (6.0, 30.0), seed=0, n_images=24)
    p5, p95 = np.percentile(box_sides(tem, seed=99, n_images=48), [5, 95])
    assert 4.5 <= p5 <= 8.0 and 22.0 <= p95 <= 38.0, (p5, p95)


def test_labels_choose_the_annotator_rule_or_every_defect(tmp_path):
    """``labels='annotator'`` renders with the presets' visibility rule (fewer, tighter labels on a
    noisy look); ``'all'`` labels every rendered defect; ``None`` keeps the base config's rule."""
    from simgen.simulate.tem import TemSampler

    real = load_real(open_source(_yolo_folder(tmp_path / "real")))
    small = Sim2RealConfig.preset("small").replace(scale="match")
    rules = {lab: match_look(real, small.replace(labels=lab).validate()).tem for lab in (None, "all", "annotator")}
    assert (rules["annotator"].label_extent, rules["annotator"].min_snr, rules["annotator"].lookalikes) == (
        0.35, 2.5, "suppress")
    assert (rules["all"].min_snr, rules["all"].lookalikes) == (0.0, "keep") and rules[None].min_snr == 0.0
    noisy = {lab: rules[lab].replace(size=128, dose=(20.0, 20.0)) for lab in ("all", "annotator")}
    n = {lab: sum(len(TemSampler(t, seed=3)(i)["boxes"]) for i in range(6)) for lab, t in noisy.items()}
    assert 0 < n["annotator"] < n["all"], n
    with pytest.raises(ParameterError, match="labels"):
        small.replace(labels="visible").validate()


def test_annotator_final_labels_follow_the_augmented_image(tmp_path):
    """``labels='annotator-final'``: the annotator rule, look-alikes searched over the trained
    ``diameter_px`` range, and applied once more to every augmented training/validation image."""
    real = load_real(open_source(_yolo_folder(tmp_path / "real")))
    cfg = _small().replace(labels="annotator-final", spec="GN", n_train=8, n_val=2).validate()
    look = match_look(real, cfg)
    assert look.tem.min_snr == 2.5 and look.tem.lookalike_px == tuple(cfg.diameter_px)
    data = generate_synthetic(tmp_path / "out", look, cfg, progress=False)
    from simgen.datasets.h5io import open_dataset

    for path in (data.train, data.val):
        with open_dataset(path) as ds:
            assert ds.attrs["generator"]["augment"]["relabel"] is True
            assert ds.attrs["generator"]["config"]["lookalike_px"] == list(cfg.diameter_px)
    assert match_look(real, cfg.replace(labels="annotator")).tem.lookalike_px is None


def test_detector_scale_reaches_the_yolo_settings(tmp_path):
    """``detector_scale`` enlarges training tiles and real images alike (YoloConfig.scale, which the
    checkpoint stores and prediction applies); out-of-range values are one clear error."""
    cfg = Sim2RealConfig(detector_scale=2.0).validate()
    assert cfg.yolo_config().scale == 2.0 and Sim2RealConfig().yolo_config().scale == 1.0
    assert cfg.yolo_config(epochs=3).scale == 2.0  # the k-fold / adaptation trainings inherit it
    # one enlarged sample is one network tile, and the seam overlap grows with the image
    assert (cfg.yolo_config().tile, cfg.yolo_config().imgsz, cfg.yolo_config().overlap) == (512, 512, 128)
    half = Sim2RealConfig(size=128, detector_scale=2.0).validate().yolo_config()
    assert (half.tile, half.imgsz) == (256, 256)  # the default's compute per sample
    assert Sim2RealConfig(size=96, detector_scale=1.5).validate().network_tile == 160  # 144 -> multiple of 32
    with pytest.raises(ParameterError, match="detector_scale"):
        Sim2RealConfig(detector_scale=20.0).validate()
    res = CliRunner().invoke(main, ["sim2real", "--real", str(tmp_path), "-o", str(tmp_path / "o"),
                                    "--detector-scale", "12"])
    assert res.exit_code == 2 and "--detector-scale" in res.output
    res = CliRunner().invoke(main, ["sim2real", "--real", str(tmp_path), "-o", str(tmp_path / "o"), "--size", "100"])
    assert res.exit_code == 2 and res.output.startswith("Error: size must be a multiple of 32")


def test_fused_log_step_scores_the_fusion_and_writes_a_detector(tmp_path):
    """``--fuse-log``: the model fused with the synthetic-tuned LoG, calibrated on the synthetic
    validation images only; its fusion.json predicts again with the same boxes."""
    from simgen.experiments.sim2real_compare import fused_log_study
    from simgen.train.fusion import load_fusion

    real_dir = _yolo_folder(tmp_path / "real")
    cfg = _small()
    with open_source(real_dir) as src:
        real = load_real(src)
        data = generate_synthetic(tmp_path / "out", match_look(real, cfg), cfg, progress=False)
        det = _LogDetector()
        det.weights = tmp_path / "best.pt"  # recorded in fusion.json; the stand-in detects in-process
        log_params = LogParams(min_sigma=2.0, max_sigma=6.0).to_dict()
        row = fused_log_study(real, data.val, det, log_params, tmp_path / "out")["fused_log"]
        assert {"precision", "recall", "f1", "ap", "peak_f1", "iou"} <= set(row) and 0 < row["conf"] <= 1
        saved = json.loads((tmp_path / "out" / "fusion.json").read_text())
        assert [m["kind"] for m in saved["members"]] == ["yolo", "log"] and saved["fitted_on"].endswith("val.h5")
        assert saved["conf_f1"] == pytest.approx(row["conf"])
    assert _small(fuse_log=True).validate().fuse_log
    with pytest.raises(ParameterError, match="needs synthetic_log"):
        _small(fuse_log=True, synthetic_log=False).validate()
    res = CliRunner().invoke(main, ["sim2real", "--real", str(real_dir), "-o", str(tmp_path / "o"), "--fuse-log",
                                    "--no-synthetic-log"])
    assert res.exit_code == 2 and res.output.startswith("Error: fuse_log")
    with pytest.raises(DataError, match="do not exist"):  # the stand-in's weights were never written
        load_fusion(tmp_path / "out" / "fusion.json")


def test_verdict_states_the_fused_detector_against_the_baseline():
    from simgen.experiments.sim2real_report import verdict

    methods = {"synthetic_yolo_loo_threshold": {"f1": 0.78, "ap": 0.79}, "log_baseline": {"f1": 0.79, "ap": 0.81}}
    assert verdict(methods).startswith("synthetic-only YOLO does not beat") and "fused" not in verdict(methods)
    methods["fused_log"] = {"f1": 0.77, "ap": 0.83}
    assert "fused with the synthetic-tuned LoG it is mixed against it: F1 0.770" in verdict(methods)
    methods["fused_log"] = {"f1": 0.80, "ap": 0.83}
    assert "fused with the synthetic-tuned LoG it beats it" in verdict(methods)
    methods["synthetic_yolo_self_train"] = {"f1": 0.802, "ap": 0.848}
    assert verdict(methods).endswith("; self-trained it beats it: F1 0.802 at its zero-label threshold vs 0.790, "
                                     "AP 0.848 vs 0.810")
    assert verdict({"synthetic_yolo": {"f1": 0.5}}) == "no baseline comparison"


def test_a_student_threshold_rule_other_than_synthetic_is_named_in_the_row():
    from simgen.experiments.sim2real_report import LABELS, method_label

    key = "synthetic_yolo_self_train"
    assert method_label(key, {"student_conf": "synthetic"}) == LABELS[key] == method_label(key, {})
    assert method_label(key, {"student_conf": "teacher_count"}).endswith("the synthetic model's count on the "
                                                                         "unlabeled images")
    assert method_label(key, {"self_train_rounds": 1}) == LABELS[key]
    assert method_label(key, {"self_train_rounds": 2, "student_conf": "teacher_count"}).startswith(
        LABELS[key] + ", 2 rounds — student threshold")


def test_backgrounds_leave_out_scored_images_and_their_near_copies(tmp_path):
    """``--backgrounds``: unlabeled frames become backgrounds of part of the synthetic images, never a
    scored image (same name) or a near copy of one (a neighbouring video frame)."""
    from PIL import Image

    from simgen.datasets.h5io import open_dataset
    from simgen.experiments.sim2real_backgrounds import load_backgrounds

    real_dir = _yolo_folder(tmp_path / "real")
    frames = tmp_path / "video" / "frames"
    frames.mkdir(parents=True)
    rng = np.random.default_rng(7)
    scored = np.asarray(Image.open(real_dir / "images" / "im0.png"), np.float32) / 255
    twin = np.clip(scored + rng.normal(0, 0.005, scored.shape), 0, 1)  # the next frame of a video
    other = np.clip(0.6 + rng.normal(0, 0.03, (120, 140)), 0, 1)
    for name, img in (("im1", scored), ("f001", twin), ("f002", other), ("f003", other[::-1])):
        Image.fromarray((img * 255).astype(np.uint8)).save(frames / f"{name}.png")
    (frames.parent / "README.md").write_text("no labels\n")
    cfg = _small(backgrounds=str(frames.parent), background_fraction=1.0).validate()
    with open_source(real_dir) as src:
        real = load_real(src)
        bgs = load_backgrounds(cfg, real)
        assert bgs.names == ["f002.png", "f003.png"]
        assert set(bgs.left_out) == {"im1.png", "f001.png"} and "near copy" in bgs.left_out["f001.png"]
        data = generate_synthetic(tmp_path / "out", match_look(real, cfg), cfg, progress=False, real=real)
    record = json.loads((tmp_path / "out" / "backgrounds.json").read_text())
    assert record["images"] == ["f002.png", "f003.png"] and record["fraction"] == 1.0
    with open_dataset(data.train) as ds:
        assert ds.attrs["generator"]["backgrounds"]["images"] == ["f002.png", "f003.png"]
        assert {ds.provenance(i)["background"] for i in range(len(ds))} <= {"f002.png", "f003.png"}
    with pytest.raises(ParameterError, match="backgrounds"):
        _small(backgrounds=str(tmp_path / "nowhere")).validate()
    with pytest.raises(ParameterError, match="background_fraction"):
        _small(background_fraction=2.0).validate()
    only_scored = tmp_path / "scored_only"
    only_scored.mkdir()
    Image.fromarray((scored * 255).astype(np.uint8)).save(only_scored / "im0.png")
    with open_source(real_dir) as src, pytest.raises(DataError, match="no usable background"):
        load_backgrounds(_small(backgrounds=str(only_scored)), load_real(src))
    command = main.get_command(None, "sim2real")
    ctx = command.make_context("sim2real", ["--real", str(real_dir), "-o", str(tmp_path / "x"), "--backgrounds",
                                            str(frames.parent), "--background-fraction", "0.3"])
    assert ctx.params["backgrounds"] == str(frames.parent) and ctx.params["background_fraction"] == 0.3


def test_diameter_px_option_reaches_the_config_and_is_checked(tmp_path, monkeypatch):
    import simgen.commands.train as train_commands

    seen = {}

    def fake_run(real, output, cfg, **kwargs):
        seen["cfg"] = cfg.validate()
        raise ParameterError("stop here")

    monkeypatch.setattr(train_commands, "run_sim2real", fake_run)
    real_dir = _yolo_folder(tmp_path / "real")
    res = CliRunner().invoke(main, ["sim2real", "--real", str(real_dir), "-o", str(tmp_path / "o"),
                                    "--diameter-px", "12", "45"])
    assert res.exit_code == 2 and "stop here" in res.output and tuple(seen["cfg"].diameter_px) == (12.0, 45.0)
    assert seen["cfg"].student_conf == "synthetic"  # the default (measured best on two of three sets: README)
    res = CliRunner().invoke(main, ["sim2real", "--real", str(real_dir), "-o", str(tmp_path / "o"),
                                    "--student-conf", "teacher_count", "--self-train-rounds", "2"])
    assert res.exit_code == 2 and seen["cfg"].student_conf == "teacher_count" and seen["cfg"].self_train_rounds == 2
    res = CliRunner().invoke(main, ["sim2real", "--real", str(real_dir), "-o", str(tmp_path / "o"),
                                    "--student-conf", "real_labels"])
    assert res.exit_code == 2 and "Invalid value" in res.output
    with pytest.raises(ParameterError, match="student_conf"):
        _small(student_conf="real_labels").validate()
    monkeypatch.undo()
    res = CliRunner().invoke(main, ["sim2real", "--real", str(real_dir), "-o", str(tmp_path / "o"),
                                    "--diameter-px", "30", "10", "--config", "small"])
    assert res.exit_code == 2 and "diameter_px" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
