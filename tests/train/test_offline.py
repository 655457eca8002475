"""Ultralytics runs offline, quietly, and only writes to simgen's own config folder.

Three proofs:
* a fresh interpreter importing Ultralytics through :func:`import_ultralytics` prints
  nothing, reports itself offline, has every integration off and writes nothing to
  ``~/.config/Ultralytics``;
* a tiny YOLO trains in-process with every socket call patched to raise;
* a tiny YOLO trains in a subprocess inside ``unshare -rn`` (no network namespace at all).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from simgen.errors import ParameterError
from simgen.train.yolo.offline import OFFLINE_SETTINGS, config_dir

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "SIMGEN_ULTRALYTICS", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), SIMGEN_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               SIMGEN_THREADS="1", PYTHONPATH=str(ROOT), MPLCONFIGDIR=str(tmp_path / "mpl"), **extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _film(path, n=8, size=64):
    from simgen.datasets.generate import write_dataset
    from simgen.simulate.film import FilmConfig, FilmSampler

    cfg = FilmConfig(size=size, n_defects=(2, 5), box_size=12, min_separation=12, single_class=True).validate()
    return write_dataset(path, FilmSampler(cfg, seed=1), n)


IMPORT_SCRIPT = """
import json
from simgen.train.yolo.offline import import_ultralytics
u = import_ultralytics()
from ultralytics.utils import ONLINE, SETTINGS, USER_CONFIG_DIR
print("RESULT " + json.dumps({"online": ONLINE, "settings": dict(SETTINGS), "dir": str(USER_CONFIG_DIR)}))
"""


def test_import_is_quiet_offline_and_project_owned(tmp_path):
    env = _env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and proc.stderr.strip() == "", (proc.stdout, proc.stderr)  # quiet
    res = json.loads(lines[0].removeprefix("RESULT "))
    home = tmp_path / "home"
    assert res["online"] is False
    assert Path(res["dir"]) == home / ".cache" / "simgen" / "ultralytics" / "Ultralytics"
    for key, value in OFFLINE_SETTINGS.items():
        assert res["settings"][key] == value, key
    assert not (home / ".config" / "Ultralytics").exists()
    assert (Path(res["dir"]) / "Arial.ttf").stat().st_size > 100_000  # a real font, no download needed


def test_setup_after_plain_import_is_refused(tmp_path):
    script = ("import ultralytics\nfrom simgen.train.yolo.offline import setup_ultralytics\n"
              "from simgen.errors import ParameterError\n"
              "try:\n    setup_ultralytics()\nexcept ParameterError as e:\n    print('REFUSED', e)\n")
    env = _env(tmp_path, YOLO_VERBOSE="False")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert "REFUSED" in proc.stdout and "before" in proc.stdout, (proc.stdout, proc.stderr)


def test_config_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("SIMGEN_ULTRALYTICS_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert config_dir() == Path.home() / ".cache" / "simgen" / "ultralytics"
    monkeypatch.setenv("SIMGEN_ULTRALYTICS_DIR", str(tmp_path))
    assert config_dir() == tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Every way of reaching the network raises."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:2])
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return calls


def test_training_in_process_with_sockets_disabled(tmp_path, monkeypatch, no_network):
    from simgen.train.yolo.config import PRESETS
    from simgen.train.yolo.offline import import_ultralytics
    from simgen.train.yolo.trainer import train_yolo

    cfg_dir = Path.home() / ".config" / "Ultralytics"
    before = cfg_dir.exists() and sorted((p.name, p.stat().st_mtime) for p in cfg_dir.iterdir())
    monkeypatch.setenv("SIMGEN_CACHE_DIR", str(tmp_path / "cache"))
    data = _film(tmp_path / "film.h5")
    import_ultralytics()
    best = train_yolo(data, tmp_path / "run", config=PRESETS["small"].replace(epochs=1), progress=False)
    assert best.exists()
    import ultralytics

    model = ultralytics.YOLO(str(best))
    assert model.names == {0: "defect"}
    assert no_network == []  # nothing even tried
    after = cfg_dir.exists() and sorted((p.name, p.stat().st_mtime) for p in cfg_dir.iterdir())
    assert before == after  # ~/.config/Ultralytics neither created nor touched


TRAIN_SCRIPT = """
import sys
from simgen.train.yolo.config import PRESETS
from simgen.train.yolo.trainer import train_yolo
best = train_yolo(sys.argv[1], sys.argv[2], config=PRESETS["small"].replace(epochs=1), progress=False)
import ultralytics
print("OK", best, len(ultralytics.YOLO(str(best)).names))
"""


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="`unshare -rn` (user + network namespace) is not available here")
def test_training_inside_network_namespace(tmp_path):
    data = _film(tmp_path / "film.h5")
    env = _env(tmp_path)
    cmd = ["unshare", "-rn", sys.executable, "-c", TRAIN_SCRIPT, str(data), str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout
    assert (tmp_path / "run" / "best.pt").exists()
    assert not (tmp_path / "home" / ".config" / "Ultralytics").exists()
    # a network check inside the namespace really fails (the test is meaningful)
    probe = subprocess.run(["unshare", "-rn", sys.executable, "-c",
                            "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
                            "    print('ONLINE')\nexcept OSError:\n    print('OFFLINE')"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "OFFLINE"


def test_pt_model_names_are_refused():
    from simgen.train.yolo.config import model_yaml

    assert model_yaml("yolov8n") == "yolov8n.yaml"
    assert model_yaml("yolo11n.yaml") == "yolo11n.yaml"
    with pytest.raises(ParameterError, match="weights file"):
        model_yaml("yolov8n.pt")
