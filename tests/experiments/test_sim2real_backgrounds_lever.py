"""The ``backgrounds`` adaptation lever of sim2real: per fold, new renders on the other folds' real images
(blobs painted over) fine-tune the synthetic model, which then scores the held-out fold."""

import json

import numpy as np
from fakedata import disc_folder

from simgen.datasets.h5io import open_dataset
from simgen.datasets.sources import open_source
from simgen.experiments.sim2real_adapt import adaptation_folds, adaptation_study
from simgen.experiments.sim2real_real import load_real
from simgen.experiments.sim2real_tem import Sim2RealConfig, generate_synthetic, match_look, train_synthetic
from simgen.train.yolo.checkpoint import load_yolo_checkpoint


def test_backgrounds_lever_fine_tunes_per_fold_on_the_other_folds_images(tmp_path):
    real_dir = disc_folder(tmp_path / "real", ((96, 96), (96, 112), (112, 96), (96, 96)))
    cfg = Sim2RealConfig.preset("small").replace(n_train=8, n_val=4, match_images=1, adapt=("backgrounds",),
                                                 self_train_epochs=1).validate()
    out = tmp_path / "out"
    with open_source(real_dir) as src:
        real = load_real(src)
        look = match_look(real, cfg)
        data = generate_synthetic(out, look, cfg, progress=False)
        weights = train_synthetic(data, out, cfg, progress=False)
        rows = adaptation_study(real, cfg, weights, data.train, data.val, out, tem=look.tem, progress=False)
    row = rows["synthetic_yolo_backgrounds"]
    assert row["folds"] == 2 and row["n_gt"] == len(real.gt) and 0 <= row["ap"] <= 1
    for i, held in enumerate(adaptation_folds(len(real), cfg.adapt_folds)):
        fold = out / "adapt" / f"fold{i}"
        record = json.loads((fold / "backgrounds.json").read_text())
        used = {name.rsplit(".", 1)[0] for name in record["backgrounds"]["images"]}
        scored = {real.names[k] for k in held}
        assert used and not used & scored and used <= set(real.names) - scored  # never a scored image
        assert record["renders"] == {"train": 8, "val": 2, "first_index": 12} and record["epochs"] == 1
        with open_dataset(fold / "backgrounds_train.h5") as ds:
            assert all(ds.provenance(k)["background"] for k in range(len(ds)))  # all on real backgrounds
            assert ds.provenance(0)["index"] == 12  # new defects, not the synthetic set's
        ckpt = load_yolo_checkpoint(fold / "backgrounds" / "best.pt")["simgen"]
        assert np.isfinite(ckpt["conf_f1"])
    # resume reuses the finished folds
    stamp = (out / "adapt" / "fold0" / "backgrounds" / "best.pt").stat().st_mtime_ns
    with open_source(real_dir) as src:
        again = adaptation_study(load_real(src), cfg, weights, data.train, data.val, out, tem=look.tem,
                                 progress=False, resume=True)
    assert again["synthetic_yolo_backgrounds"]["ap"] == row["ap"]
    assert (out / "adapt" / "fold0" / "backgrounds" / "best.pt").stat().st_mtime_ns == stamp
