"""Frame pairs and their change maps (and single frames with their masks): reading, normalization,
augmentation, class weights."""

from __future__ import annotations

from collections import OrderedDict
from os import PathLike

import numpy as np

from simgen.datasets.h5io import Dataset
from simgen.datasets.normalize import tail_percentiles
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError, ParameterError
from simgen.rng import sample_rng
from simgen.simulate.filament import change_map
from simgen.train.changedet.config import CHANGE_CLASSES, DeltaNetConfig
from simgen.train.changedet.model import swap_direction

__all__ = [
    "normalize_pair",
    "class_weights",
    "PairSource",
    "open_pairs",
    "photometric",
]


# -- data -----------------------------------------------------------------------------
class PairSource:
    """Frame pairs and their change maps from a filament pair file (see :func:`open_pairs`).

    Frames are read through :attr:`source` (a :class:`~simgen.datasets.sources.Source`);
    the pair index, change maps and sequence information come from its dataset.

    Attributes
    ----------
    source : Source
        The frames: sample ``i`` is frame ``i``.
    path : Path
    n : int
        Number of pairs.
    index : (M, 2) int64
        Frame (sample) indices ``(first, second)`` of every pair; ``second < first`` for
        backward pairs.
    targets : tuple of str
        Change-map names, ``("a1", "a2")`` for ``/pairs/change_a1`` and ``/pairs/change_a2``.
    has_maps : bool
        Whether change maps are stored (prediction does not need them).
    sequence, time : (N,) int64 or None
        Sequence and time index of every frame (``/filament/sequence``, ``/filament/frame``).
    """

    def __init__(self, source: Source, index: np.ndarray, targets, maps: dict | None,
                 sequence: np.ndarray | None, time: np.ndarray | None):
        self.source = source
        self.path = source.path
        self.index = index
        self.n = len(index)
        self.targets = tuple(targets)
        self._maps = maps
        self.has_maps = maps is not None
        self.sequence = sequence
        self.time = time
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()  # small LRU cache (chains reuse frames)

    @property
    def n_frames(self) -> int:
        return len(self.source)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as float32 (H, W) in [0, 1]."""
        i = int(i)
        if i in self._frames:
            self._frames.move_to_end(i)
        else:
            self._frames[i] = self.source.image(i)
            while len(self._frames) > 64:
                self._frames.popitem(last=False)
        return self._frames[i]

    def frames(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.index[p]
        return self.frame(a), self.frame(b)

    def maps(self, p: int) -> dict[str, np.ndarray]:
        if self._maps is None:
            raise DataError(f"{self.path} stores no change maps")
        return {t: np.asarray(self._maps[t][p]) for t in self.targets}

    def chain(self, p: int) -> list[int] | None:
        """Frame indices ``t, t±1, ..., t±k`` from the first to the second frame of pair ``p``
        when they all belong to one sequence and follow each other in time, else ``None``."""
        if self.sequence is None:
            return None
        a, b = (int(v) for v in self.index[p])
        if a == b:
            return None
        step = 1 if b > a else -1
        frames = list(range(a, b + step, step))
        seq, time = self.sequence[frames], self.time[frames]
        if np.all(seq == seq[0]) and np.all(np.diff(time) == step):
            return frames
        return None

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> PairSource:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def open_pairs(path: str | PathLike | Source, require_maps: bool = True) -> PairSource:
    """Open a filament pair file written by :func:`simgen.datasets.video_io.write_filament`.

    The frames are opened with :func:`~simgen.datasets.sources.open_source` (an open Source
    is used as is, not closed).  Layout read::

        /images                 (N, H, W) frames of all sequences (one sample per frame)
        /pairs/index            (M, 2) int   frame indices (first, second) of each pair
        /pairs/change_<target>  (M, H, W) uint8 change maps (0 background, 1 appearing,
                                2 disappearing, 3 unchanged-present); targets a1, a2
        /filament/sequence      (N,) sequence of each frame  } for the consecutive chain
        /filament/frame         (N,) time index in it        } (optional)

    Raises
    ------
    DataError, SchemaError
        Missing file, no images, no ``/pairs/index``, maps of the wrong shape, bad indices.
    """

    src = open_source(path)
    try:
        ds = src.dataset
        if not isinstance(ds, Dataset) or not ds.has("pairs/index") or len(src) != ds.n:
            raise DataError(f"{src.path} has no /pairs/index; change detection needs a filament pair file "
                            "(simgen simulate filament)")
        index = np.asarray(ds.array("pairs/index"), np.int64)
        if index.ndim != 2 or index.shape[1] != 2 or len(index) == 0:
            raise DataError(f"{src.path}: /pairs/index has shape {index.shape}, expected (M, 2) with M >= 1")
        if index.min() < 0 or index.max() >= ds.n:
            raise DataError(f"{src.path}: /pairs/index refers to frames outside 0..{ds.n - 1}")
        targets = tuple(sorted(k[len("change_"):] for k in ds.file["pairs"] if k.startswith("change_")))
        maps = None
        if targets:
            maps = {t: ds.file[f"pairs/change_{t}"] for t in targets}
            for t, m in maps.items():
                if m.shape != (len(index), *ds.image_shape):
                    raise DataError(f"{src.path}: /pairs/change_{t} has shape {m.shape}, "
                                    f"expected {(len(index), *ds.image_shape)}")
        elif require_maps:
            raise DataError(f"{src.path} has no change maps /pairs/change_<target>")
        else:
            targets = None  # prediction: the model's targets are used
        sequence, time = _sequence_info(ds)
    except BaseException:
        src.close()
        raise
    return PairSource(src, index, targets or (), maps, sequence, time)


def _sequence_info(ds: Dataset) -> tuple[np.ndarray | None, np.ndarray | None]:
    if ds.has("filament/sequence") and ds.has("filament/frame"):
        seq = np.asarray(ds.array("filament/sequence"), np.int64)
        time = np.asarray(ds.array("filament/frame"), np.int64)
        if seq.shape == time.shape == (ds.n,):
            return seq, time
    return None, None


def normalize_pair(a: np.ndarray, b: np.ndarray, mode: str = "percentile") -> tuple[np.ndarray, np.ndarray]:
    """Contrast-stretch two frames with one mapping (0.5/99.5 percentiles or min/max of both)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if mode == "none":
        return a, b
    both = np.concatenate([a.ravel(), b.ravel()])
    if mode == "percentile":
        lo, hi = tail_percentiles(both, 0.5, 99.5)
    elif mode == "minmax":
        lo, hi = float(both.min()), float(both.max())
    else:
        raise ParameterError(f"normalize must be percentile, minmax or none, got {mode!r}")
    if not hi > lo:
        return np.full_like(a, 0.5), np.full_like(b, 0.5)
    lo, scale = np.float32(lo), np.float32(1.0 / (hi - lo))
    return np.clip((a - lo) * scale, 0, 1).astype(np.float32), np.clip((b - lo) * scale, 0, 1).astype(np.float32)


def _augment_pair(a, b, maps, rng, crop: int, augment: bool = True):
    """Random ``crop``² window (when the frames are larger), then flips and 90° rotations."""
    h, w = a.shape
    if crop and (h > crop or w > crop):
        y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        sl = (slice(y, y + crop), slice(x, x + crop))
        a, b, maps = a[sl], b[sl], {t: m[sl] for t, m in maps.items()}
    if augment:
        if rng.random() < 0.5:
            a, b, maps = a[:, ::-1], b[:, ::-1], {t: m[:, ::-1] for t, m in maps.items()}
        if rng.random() < 0.5:
            a, b, maps = a[::-1], b[::-1], {t: m[::-1] for t, m in maps.items()}
        if a.shape[0] == a.shape[1]:
            k = int(rng.integers(4))
            a, b, maps = np.rot90(a, k), np.rot90(b, k), {t: np.rot90(m, k) for t, m in maps.items()}
    return a, b, maps


def photometric(frames, rng: np.random.Generator, blur: float = 0.0, brightness: float = 0.0) -> list:
    """Blur (probability ``blur``, one sigma in [0.3, 1.5] px for all frames) and brightness/contrast
    jitter (``g x + o`` per frame, ``g`` in [1 - b, 1 + b], ``o`` in [-b/2, b/2], clipped to [0, 1])
    of normalised (H, W) frames.  Draws nothing from ``rng`` when both are 0."""
    out = [np.asarray(f, np.float32) for f in frames]
    if blur and rng.random() < blur:
        from scipy.ndimage import gaussian_filter

        sigma = float(rng.uniform(0.3, 1.5))
        out = [gaussian_filter(f, sigma) for f in out]
    if brightness:
        b = float(brightness)
        out = [np.clip(f * np.float32(rng.uniform(1 - b, 1 + b)) + np.float32(rng.uniform(-b / 2, b / 2)), 0, 1)
               .astype(np.float32) for f in out]
    return out


def _check_tasks(tasks, targets, path) -> tuple:
    """The targets to train: ``tasks`` (checked against the data's ``targets``) or all of them."""
    tasks = tuple(tasks or ())
    missing = [t for t in tasks if t not in targets]
    if missing:
        raise DataError(f"{path} has no target(s) {', '.join(missing)}; it has {', '.join(targets) or 'none'}")
    return tasks or tuple(targets)


class _DerivedMaps:
    """Change maps of the pairs computed on demand from per-frame masks (``maps[k][target]``).

    All-pairs files hold ``n (n - 1) / 2`` maps per sequence of ``n`` frames; the ``n`` masks
    are all the memory this needs.
    """

    def __init__(self, index: np.ndarray, masks: dict):
        self.index = index
        self.masks = masks  # {target: {frame: (H, W) bool}}

    @classmethod
    def from_source(cls, src: PairSource, targets, used) -> _DerivedMaps | None:
        ds = src.source.dataset
        if src.n == 0 or not all(ds.has(f"filament/{t}") for t in targets):
            return None
        masks = {t: {int(i): np.asarray(ds.file[f"filament/{t}"][int(i)]) > 0 for i in used} for t in targets}
        out = cls(src.index, masks)
        stored = src.maps(0)
        if any(not np.array_equal(out[0][t], stored[t]) for t in targets):
            return None
        return out

    def __getitem__(self, k: int) -> dict:
        i, j = (int(v) for v in self.index[k])
        return {t: change_map(m[i], m[j]) for t, m in self.masks.items()}

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        return (self[k] for k in range(len(self)))


class _PairSamples:
    """Pairs cached in memory: every frame once (float16), change maps per pair (uint8)."""

    def __init__(self, src: PairSource, crop: int, depth: int, train: bool, tasks=()):
        self.targets = _check_tasks(tasks, src.targets, src.path)
        used = np.unique(src.index)
        self.frames = {int(i): np.asarray(src.frame(int(i)), np.float32).astype(np.float16) for i in used}
        src._frames.clear()
        self.index = src.index.copy()
        self.maps = _DerivedMaps.from_source(src, self.targets, used)
        if self.maps is None:  # no per-frame masks that reproduce the stored maps: keep the stored maps
            self.maps = [{t: np.asarray(m, np.uint8) for t, m in src.maps(p).items() if t in self.targets}
                         for p in range(src.n)]
            for mp in self.maps:
                for t, arr in mp.items():
                    if arr.size and arr.max() >= len(CHANGE_CLASSES):
                        raise DataError(f"{src.path}: change map {t!r} holds class ids >= {len(CHANGE_CLASSES)}")
        h, w = self.frames[int(used[0])].shape
        m = 2 ** depth
        if train and crop and (h < crop or w < crop):
            raise DataError(f"{src.path}: frames of {h}x{w} px are smaller than the {crop}² training crop")
        if train and not crop and (h % m or w % m):
            raise DataError(f"{src.path}: frames of {h}x{w} px must be multiples of {m} without cropping; set a crop")

    def pair(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        i, j = self.index[k]
        return self.frames[int(i)].astype(np.float32), self.frames[int(j)].astype(np.float32)

    def __len__(self):
        return len(self.index)

    def batch(self, ks, cfg: DeltaNetConfig, epoch: int | None, device):
        import torch

        xa, xb, ys = [], [], {t: [] for t in self.targets}
        for k in ks:
            (a, b), maps = self.pair(k), self.maps[k]
            a, b = normalize_pair(a, b, cfg.normalize)
            if epoch is not None:
                rng = sample_rng(cfg.seed, epoch, 2, int(k))
                a, b, maps = _augment_pair(a, b, maps, rng, cfg.crop, cfg.augment)
                if cfg.reverse and rng.random() < cfg.reverse:
                    a, b, maps = b, a, {t: swap_direction(m) for t, m in maps.items()}
                a, b = photometric((a, b), rng, cfg.blur, cfg.brightness)
            xa.append(np.ascontiguousarray(a))
            xb.append(np.ascontiguousarray(b))
            for t in self.targets:
                ys[t].append(np.ascontiguousarray(maps[t]))
        ta = torch.from_numpy(np.stack(xa)[:, None]).to(device)
        tb = torch.from_numpy(np.stack(xb)[:, None]).to(device)
        return ta, tb, {t: torch.from_numpy(np.stack(v).astype(np.int64)).to(device) for t, v in ys.items()}


class _FrameSamples:
    """Single frames and their per-frame masks (``/filament/<target>``) cached in memory, for the
    single-frame segmentation U-Net."""

    def __init__(self, src: PairSource, crop: int, depth: int, train: bool, tasks=()):
        ds = src.source.dataset
        have = tuple(t for t in ("a1", "a2") if ds.has(f"filament/{t}"))
        if not have:
            raise DataError(f"{src.path} has no per-frame masks /filament/a1, /filament/a2")
        self.targets = _check_tasks(tasks, have, src.path)
        self.frames = [np.asarray(src.frame(i), np.float32).astype(np.float16) for i in range(src.n_frames)]
        src._frames.clear()
        self.masks = [{t: (np.asarray(ds.file[f"filament/{t}"][i]) > 0).astype(np.uint8) for t in self.targets}
                      for i in range(src.n_frames)]
        h, w = self.frames[0].shape
        m = 2 ** depth
        if train and crop and (h < crop or w < crop):
            raise DataError(f"{src.path}: frames of {h}x{w} px are smaller than the {crop}² training crop")
        if train and not crop and (h % m or w % m):
            raise DataError(f"{src.path}: frames of {h}x{w} px must be multiples of {m} without cropping; set a crop")

    def frame(self, k: int) -> np.ndarray:
        return self.frames[int(k)].astype(np.float32)

    def __len__(self):
        return len(self.frames)

    def batch(self, ks, cfg: DeltaNetConfig, epoch: int | None, device):
        import torch

        xs, ys = [], {t: [] for t in self.targets}
        for k in ks:
            x = normalize_pair(self.frame(k), self.frame(k), cfg.normalize)[0]
            maps = self.masks[int(k)]
            if epoch is not None:
                rng = sample_rng(cfg.seed, epoch, 2, int(k))
                x, _, maps = _augment_pair(x, x, maps, rng, cfg.crop, cfg.augment)
                (x,) = photometric((x,), rng, cfg.blur, cfg.brightness)
            xs.append(np.ascontiguousarray(x))
            for t in self.targets:
                ys[t].append(np.ascontiguousarray(maps[t]))
        tx = torch.from_numpy(np.stack(xs)[:, None]).to(device)
        return tx, {t: torch.from_numpy(np.stack(v).astype(np.int64)).to(device) for t, v in ys.items()}


def class_weights(maps, power: float = 0.5, floor: float = 1e-4, n_classes: int = len(CHANGE_CLASSES)) -> tuple:
    """Per-class weights ``f_c**-power`` from label maps, normalised so that sum_c f_c w_c = 1.

    ``maps`` is an iterable of label arrays (change maps: ``n_classes`` = 4; masks: 2); class
    frequencies below ``floor`` are raised to it (a class absent from the data gets a large but
    finite weight).
    """
    counts = np.zeros(n_classes, np.float64)
    for m in maps:
        counts += np.bincount(np.asarray(m, np.int64).ravel(), minlength=n_classes)[:n_classes]
    if counts.sum() == 0:
        return tuple([1.0] * n_classes)
    f = np.maximum(counts / counts.sum(), floor)
    w = f ** -power
    w /= float((f * w).sum() / f.sum())
    return tuple(round(float(x), 4) for x in w)

