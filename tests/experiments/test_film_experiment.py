"""Film experiment classes: one class 'defect' by default, plus/minus (without flips) as an option."""

from simgen.datasets.h5io import open_dataset
from simgen.experiments.sim2real_film import FilmExperimentConfig, generate_film_data


def _tiny(**kw):
    return FilmExperimentConfig.preset("small").replace(n_train=2, n_val=1, n_test=1, test_steps=5, **kw)


def test_film_experiment_is_single_class_by_default(tmp_path):
    cfg = _tiny()
    data = generate_film_data(tmp_path / "one", cfg, progress=False)
    assert data.class_names == ["defect"]
    with open_dataset(data.train) as ds:
        assert ds.class_names == ["defect"] and set(ds.table("boxes")["class"]) <= {0}
        assert set(ds.table("points")["charge"]) <= {-1, 1}  # the charge is kept as a point attribute
    y = cfg.yolo_config()
    assert y.fliplr == 0.5 and y.flipud == 0.5


def test_film_experiment_two_class_option_turns_flips_off(tmp_path):
    cfg = _tiny(two_class=True)
    data = generate_film_data(tmp_path / "two", cfg, progress=False)
    assert data.class_names == ["plus", "minus"]
    for path in (data.train, *data.tests.values()):
        with open_dataset(path) as ds:
            assert ds.class_names == ["plus", "minus"]
    y = cfg.yolo_config()
    assert y.fliplr == 0.0 and y.flipud == 0.0  # a mirror flip swaps +1 and -1: flips would contradict the labels
