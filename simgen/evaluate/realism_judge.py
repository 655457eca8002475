"""A realism judge: can a small CNN tell synthetic patches from real ones?

This is a classifier two-sample test (C2ST): a small CNN, trained from scratch, tries
to tell random patches of the synthetic set from random patches of the real set; its
held-out ROC AUC is the realism score.  0.5 means the judge cannot tell the two sets
apart, 1.0 means it tells every patch.

Honesty rules, each because a judge that breaks them measures something else:

* **Folds split by source image.**  Each side's images are dealt into ``folds`` groups;
  a fold's judge trains on patches of the other groups' images and scores the patches
  of its own, so the judge never sees an image it is tested on (otherwise it learns to
  recognise images, not domains).
* **Per-patch standardization** (subtract the patch mean, divide by its std) on both
  sides, so a global offset or gain is no cue: the judge must find texture, noise,
  blur or shape differences.  Brightness and grey-level shape are covered by the
  histogram distance reported next to the AUC (:func:`simgen.augment.realism.realism_distance`).
* **Balanced.**  The scored pool holds the same number of patches per side, spread
  evenly over each side's images; training batches are half real, half synthetic.
* **Seeded, fixed budget.**  A fixed number of steps per fold; the same seed gives the
  same numbers on the same device.

Real labels are never read: only pixels.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.stats import rankdata

from simgen.atomic import atomic_write_bytes
from simgen.augment.realism import realism_distance
from simgen.datasets.imageio import IMAGE_SUFFIXES, read_image
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.evaluate.blob_census import blob_census, census_distance
from simgen.runtime import select_device, setup_threads
from simgen.spread import spread_indices

__all__ = ["JudgeSettings", "JudgeResult", "judge_realism", "rank_auc", "standardize_patches", "sheet_png",
           "report_markdown", "report_json", "write_report", "REPORT_FILES"]

#: The files :func:`write_report` writes.
REPORT_FILES = ("realism.json", "realism.md", "sheet.png")

SIDES = ("real", "synthetic")  # label 0, label 1: scores are p(synthetic)


@dataclass(frozen=True)
class JudgeSettings:
    """Settings of :func:`judge_realism` (all recorded in the report).

    Attributes
    ----------
    patch : int
        Patch side in px (16-256; 64-96 is the useful range).
    n_patches : int
        Scored patches per side (the held-out pool; every patch is scored exactly once).
    folds : int
        Folds over source images (each side needs at least this many images).
    steps : int
        Optimizer steps per fold.
    batch : int
        Patches per step, half from each side (even, >= 2).
    lr : float
        Adam learning rate.
    seed : int
        Seeds patch positions, fold assignment and network initialisation.
    scale : float
        Resampling factor applied to synthetic images before patching:
        synthetic nm/px divided by real nm/px (0.5 halves the synthetic image side).
    max_images : int
        At most this many images per side are read (evenly spaced over the set).
    device : str
        ``"auto"`` (CUDA when visible, else CPU), ``"cpu"``, ``"cuda[:N]"`` (:func:`simgen.runtime.select_device`).
    threads : int or None
        Torch CPU threads; ``None``: ``$SIMGEN_THREADS``, then ``$OMP_NUM_THREADS``, else 1.
    """

    patch: int = 64
    n_patches: int = 512
    folds: int = 5
    steps: int = 300
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0
    scale: float = 1.0
    max_images: int = 200
    device: str = "auto"
    threads: int | None = None

    def validate(self) -> "JudgeSettings":
        checks = [
            (16 <= self.patch <= 256, f"patch must be 16-256 px, got {self.patch}"),
            (self.n_patches >= 2 * self.folds,
             f"n_patches must be >= 2 x folds ({2 * self.folds}), got {self.n_patches}"),
            (self.folds >= 2, f"folds must be >= 2, got {self.folds}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch >= 2 and self.batch % 2 == 0, f"batch must be even and >= 2, got {self.batch}"),
            (np.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (np.isfinite(self.scale) and 0.05 <= self.scale <= 20, f"scale must be in [0.05, 20], got {self.scale}"),
            (self.max_images >= 1, f"max_images must be >= 1, got {self.max_images}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(message)
        return self


@dataclass
class JudgeResult:
    """Outcome of :func:`judge_realism`.

    Per-patch arrays have length ``N = 2 * n_patches`` (real patches first).

    Attributes
    ----------
    auc : float
        Mean held-out ROC AUC over folds (p(synthetic) as the score; 0.5 = cannot tell).
    auc_std : float
        Standard deviation of the fold AUCs (ddof=1).
    auc_folds : list of float
        Held-out AUC of each fold.
    n_patches, n_images : dict
        Per side (``"real"``, ``"synthetic"``).
    distance : dict
        ``psd`` (decades) and ``histogram`` (W1) of :func:`simgen.augment.realism.realism_distance`,
        synthetic (after ``scale``) vs real, on square tiles of one common side (the smallest
        image side of both sets) so that image size does not enter the spectrum.
    settings : dict
        :class:`JudgeSettings` as used, plus ``device`` and ``threads``.
    seconds : float
        Wall time of the whole judgement.
    scores : ndarray, shape (N,), float32
        Held-out p(synthetic) of every scored patch.
    is_synthetic : ndarray, shape (N,), bool
    image : ndarray, shape (N,), int
        Index of the source image within its side (sorted file order / dataset order).
    fold : ndarray, shape (N,), int
    origin : ndarray, shape (N, 2), int
        Top-left ``(row, col)`` of each patch in its (scaled) source image, px.
    patches : ndarray, shape (N, patch, patch), float32
        The patches as read (in [0, 1], before standardization), for the sheet.
    """

    auc: float
    auc_std: float
    auc_folds: list
    n_patches: dict
    n_images: dict
    distance: dict
    settings: dict
    seconds: float
    scores: np.ndarray = field(repr=False)
    is_synthetic: np.ndarray = field(repr=False)
    image: np.ndarray = field(repr=False)
    fold: np.ndarray = field(repr=False)
    origin: np.ndarray = field(repr=False)
    patches: np.ndarray = field(repr=False)
    #: :class:`~simgen.evaluate.blob_census.BlobCensus` of each side, as dicts (``{}`` when not computed)
    census: dict = field(default_factory=dict)

    @property
    def auc_pooled(self) -> float:
        """AUC of all held-out scores pooled over folds (a cross-check of :attr:`auc`)."""
        return rank_auc(self.scores, self.is_synthetic)

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-patch arrays)."""
        return {"auc": self.auc, "auc_std": self.auc_std, "auc_folds": list(self.auc_folds),
                "auc_pooled": self.auc_pooled, "n_patches": dict(self.n_patches), "n_images": dict(self.n_images),
                "distance": dict(self.distance), "census": dict(self.census), "settings": dict(self.settings),
                "seconds": self.seconds}

    def image_scores(self) -> dict:
        """Mean held-out p(synthetic) of each source image, per side (index = image index).

        A real image scored like the synthetic ones is unlike the *other* real images (another
        magnification, another specimen): the judge can only learn "real" from those.
        """
        out = {}
        for side, sel in (("real", ~self.is_synthetic), ("synthetic", self.is_synthetic)):
            total = np.bincount(self.image[sel], weights=self.scores[sel], minlength=self.n_images[side])
            count = np.bincount(self.image[sel], minlength=self.n_images[side])
            with np.errstate(invalid="ignore", divide="ignore"):
                out[side] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return out

    def patch_table(self) -> dict:
        """Per-patch held-out scores as JSON-ready columns: side, image, fold, row, col, score."""
        return {"side": np.where(self.is_synthetic, "synthetic", "real").tolist(), "image": self.image.tolist(),
                "fold": self.fold.tolist(), "row": self.origin[:, 0].tolist(), "col": self.origin[:, 1].tolist(),
                "score": np.round(self.scores.astype(float), 5).tolist()}


# -- input --------------------------------------------------------------------------------
def _load_images(path, limit: int | None = None) -> list[np.ndarray]:
    """Images of any source :func:`~simgen.datasets.sources.open_source` reads (HDF5, shard set, image
    folder) or of one image file, as float32 ``(H, W)`` arrays in [0, 1]; at most ``limit``, evenly spaced.

    Labels are never read: a folder with ``images/`` is read as the plain image folder ``images/``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [read_image(path)]
    if path.is_dir() and (path / "images").is_dir():
        path = path / "images"
    with open_source(path) as src:
        return [src.image(int(i)) for i in spread_indices(len(src), limit)]


def _as_images(images, side: str) -> list[np.ndarray]:
    out = []
    for i, im in enumerate(images):
        a = np.asarray(im, np.float32)
        if a.ndim != 2:
            raise DataError(f"{side} image {i} has shape {a.shape}; expected a 2-D greyscale image")
        if not np.isfinite(a).all():
            raise DataError(f"{side} image {i} contains non-finite values (NaN or inf)")
        out.append(a)
    if not out:
        raise DataError(f"the {side} set holds no images")
    return out


def _tiles(images, side: int) -> list[np.ndarray]:
    """Non-overlapping ``side`` x ``side`` crops (views) covering each image from its top-left corner."""
    return [im[r:r + side, c:c + side] for im in images
            for r in range(0, im.shape[0] - side + 1, side) for c in range(0, im.shape[1] - side + 1, side)]


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """Resample by ``scale`` (cubic spline); Gaussian pre-filter when shrinking so it does not alias."""
    if scale == 1.0:
        return image
    if scale < 1.0:
        image = ndimage.gaussian_filter(image, sigma=0.5 * (1.0 / scale - 1.0), mode="reflect")
    return np.clip(ndimage.zoom(image, scale, order=3, mode="reflect", grid_mode=True), 0.0, 1.0).astype(np.float32)


# -- patches and AUC ------------------------------------------------------------------------
def standardize_patches(patches: np.ndarray) -> np.ndarray:
    """Per-patch standardization ``(p - mean) / std``; constant patches become zeros.

    Parameters
    ----------
    patches : ndarray, shape (N, P, P)

    Returns
    -------
    ndarray, shape (N, P, P), float32
    """
    p = np.asarray(patches, np.float32)
    mean = p.mean(axis=(1, 2), keepdims=True)
    std = p.std(axis=(1, 2), keepdims=True)
    # a flat patch (saturated, blank) has std ~ rounding error: map it to zeros, not amplified noise
    return np.where(std > 1e-6, (p - mean) / np.maximum(std, 1e-6), 0.0).astype(np.float32)


def _crop(images, idx, rows, cols, size) -> np.ndarray:
    return np.stack([images[i][r:r + size, c:c + size] for i, r, c in zip(idx, rows, cols)])


def _positions(rng, images, idx, size):
    rows = np.array([rng.integers(0, images[i].shape[0] - size + 1) for i in idx], dtype=np.int64)
    cols = np.array([rng.integers(0, images[i].shape[1] - size + 1) for i in idx], dtype=np.int64)
    return rows, cols


def rank_auc(scores: ArrayLike, positive: ArrayLike) -> float:
    """ROC AUC by the rank (Mann-Whitney) formula, ties counted as one half.

    Parameters
    ----------
    scores : array-like, shape (N,)
    positive : array-like of bool, shape (N,)

    Returns
    -------
    float
        P(score of a random positive > score of a random negative); NaN if a class is absent.
    """
    s = np.asarray(scores, np.float64)
    pos = np.asarray(positive, bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks: a tie contributes 1/2
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


# -- the judge --------------------------------------------------------------------------------
def _network(torch):
    """Four 3x3 conv blocks, then mean and max pooling over positions (texture statistics and
    the single most telling spot), then one logit.  ~16k weights: it has to find a cue, not
    memorise patches."""
    nn = torch.nn

    def block(cin, cout, pool):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    class Judge(nn.Module):
        def __init__(self):
            super().__init__()
            # narrow early layers: they run at full resolution and dominate the CPU time
            self.features = nn.Sequential(*block(1, 8, True), *block(8, 16, True), *block(16, 32, True),
                                          *block(32, 32, False))
            self.head = nn.Linear(64, 1)

        def forward(self, x):
            f = self.features(x)
            return self.head(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)).squeeze(1)

    return Judge()


def judge_realism(synthetic: str | os.PathLike | Sequence[np.ndarray], real: str | os.PathLike | Sequence[np.ndarray],
                  settings: JudgeSettings | None = None, log: Callable[[str], object] | None = None) -> JudgeResult:
    """Classifier two-sample test of ``synthetic`` against ``real`` images.

    Parameters
    ----------
    synthetic, real : path or sequence of ndarray
        A simgen HDF5 dataset, an image folder (its ``images/`` subfolder if present) or
        image file; or float ``(H, W)`` images in [0, 1].  Each side needs at least
        ``settings.folds`` images, each at least ``settings.patch`` px on both sides (the
        synthetic ones after ``settings.scale``).
    settings : JudgeSettings, optional
    log : callable, optional
        ``log(str)`` gets one line per fold.

    Returns
    -------
    JudgeResult

    Raises
    ------
    ParameterError
        Bad settings, too few images for the folds, images smaller than the patch.
    DataError
        Missing or empty input, non-2-D or non-finite images.
    """
    settings = (settings or JudgeSettings()).validate()
    import torch

    device = select_device(settings.device)
    start = time.perf_counter()
    sides = {}
    for side, source in (("real", real), ("synthetic", synthetic)):  # read and check both before any training
        images = _load_images(source, settings.max_images) if isinstance(source, (str, os.PathLike)) else source
        sides[side] = _as_images(images, side)
    sides["synthetic"] = [_rescale(im, settings.scale) for im in sides["synthetic"]]
    for side, images in sides.items():
        small = [i for i, im in enumerate(images) if min(im.shape) < settings.patch]
        if small:
            h, w = images[small[0]].shape
            raise ParameterError(f"{side} image {small[0]} is {w}x{h} px, smaller than the {settings.patch} px patch"
                                 f"{' after --scale' if side == 'synthetic' and settings.scale != 1 else ''}; "
                                 "use a smaller --patch")
        if len(images) < settings.folds:
            raise ParameterError(f"the {side} set has {len(images)} images, fewer than the {settings.folds} folds "
                                 "(folds split by source image); use fewer --folds")

    rng = np.random.default_rng(np.random.SeedSequence(settings.seed))
    n, size = settings.n_patches, settings.patch
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("image", "fold", "row", "col", "patch", "label")}
    folds_of = {}
    for label, side in enumerate(SIDES):
        images = sides[side]
        order = rng.permutation(len(images))
        folds_of[side] = np.empty(len(images), np.int64)
        folds_of[side][order] = np.arange(len(images)) % settings.folds
        # the scored pool: images taken in turn along ``order``, which cycles through the folds, so
        # every fold holds >= n // folds patches per side even when images outnumber patches
        idx = np.resize(order, n)
        rows, cs = _positions(rng, images, idx, size)
        for key, value in (("image", idx), ("fold", folds_of[side][idx]), ("row", rows), ("col", cs),
                           ("patch", _crop(images, idx, rows, cs, size)), ("label", np.full(n, label))):
            cols[key].append(value)
    pool = {k: np.concatenate(v) for k, v in cols.items()}
    pool_std = standardize_patches(pool["patch"])

    threads = setup_threads(settings.threads)
    scores = np.full(2 * n, np.nan, np.float32)
    aucs = []
    for k in range(settings.folds):
        train = {side: np.flatnonzero(folds_of[side] != k) for side in SIDES}
        model = _train_fold(torch, sides, train, settings, device, seed=settings.seed * 1000 + k, rng=rng)
        test = np.flatnonzero(pool["fold"] == k)
        scores[test] = _predict(torch, model, pool_std[test], device)
        aucs.append(rank_auc(scores[test], pool["label"][test] == 1))
        if log is not None:
            log(f"fold {k + 1}/{settings.folds}: AUC {aucs[-1]:.3f} ({len(test)} held-out patches)")

    # equal-size square tiles on both sides: the PSD of realism_distance is per image and scales
    # with its pixel count, so 512 px synthetic vs 2048 px real images would differ by 1.2 decades
    # from size alone
    side_px = min(min(im.shape) for images in sides.values() for im in images)
    distance = realism_distance(_tiles(sides["synthetic"], side_px), _tiles(sides["real"], side_px)).to_dict()
    # what a detector trains on: the dark, defect-sized blobs per Mpx by depth (pixels only)
    census = {side: blob_census(sides[side]) for side in SIDES}
    aucs_arr = np.asarray(aucs)
    return JudgeResult(
        auc=float(aucs_arr.mean()), auc_std=float(aucs_arr.std(ddof=1)), auc_folds=[float(a) for a in aucs],
        n_patches={s: n for s in SIDES}, n_images={s: len(sides[s]) for s in SIDES},
        distance={"psd": distance["psd"], "histogram": distance["histogram"],
                  "blobs": census_distance(census["synthetic"], census["real"])},
        settings={**asdict(settings), "device": str(device), "threads": threads},
        seconds=time.perf_counter() - start, scores=scores, is_synthetic=pool["label"] == 1, image=pool["image"],
        fold=pool["fold"], origin=np.stack([pool["row"], pool["col"]], axis=1), patches=pool["patch"],
        census={side: c.to_dict() for side, c in census.items()},
    )


def _train_fold(torch, sides, train, settings: JudgeSettings, device, seed: int, rng):
    torch.manual_seed(seed)
    model = _network(torch).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.steps)
    half, size = settings.batch // 2, settings.patch
    target = torch.cat([torch.zeros(half), torch.ones(half)]).to(device)
    model.train()
    for _ in range(settings.steps):
        # fresh random positions every step: the judge sees many views of each training image
        # instead of memorising a fixed patch set (which would overfit a few images)
        parts = []
        for side in SIDES:
            idx = rng.choice(train[side], half)
            rows, cols = _positions(rng, sides[side], idx, size)
            parts.append(_crop(sides[side], idx, rows, cols, size))
        x = torch.from_numpy(standardize_patches(np.concatenate(parts))[:, None]).to(device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model


def _predict(torch, model, patches: np.ndarray, device, chunk: int = 256) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for a in range(0, len(patches), chunk):
            x = torch.from_numpy(patches[a:a + chunk, None]).to(device)
            out.append(torch.sigmoid(model(x)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# -- report -----------------------------------------------------------------------------------
def sheet_png(result: JudgeResult, n: int = 16, cols: int = 8) -> bytes:
    """PNG bytes of three panels of held-out patches, as the judge sees them (standardized, ±3 σ).

    Panels: synthetic patches judged most synthetic (what gives renders away), synthetic
    patches judged most real (the hardest fakes), real patches judged most real.  Each
    patch is titled with its source (``s``/``r`` + image index) and p(synthetic).
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global figure state, renders with Agg

    syn, real = np.flatnonzero(result.is_synthetic), np.flatnonzero(~result.is_synthetic)
    panels = [
        ("synthetic judged most synthetic", syn[np.argsort(-result.scores[syn], kind="stable")][:n]),
        ("synthetic judged most real (hardest fakes)", syn[np.argsort(result.scores[syn], kind="stable")][:n]),
        ("real judged most real", real[np.argsort(result.scores[real], kind="stable")][:n]),
    ]
    rows_per = max(1, int(np.ceil(n / cols)))
    size = result.patches.shape[-1]
    gap = max(2, size // 4)  # px above each patch for its caption and between columns
    step = size + gap
    # one image per panel (not one axes per patch: 48 axes took ~5 s to draw on a loaded CPU)
    fig = Figure(figsize=(cols * 1.3, len(panels) * (rows_per * 1.3 + 0.35) + 0.5))
    grid = fig.add_gridspec(len(panels), 1, left=0.01, right=0.99, bottom=0.01,
                            top=1 - 0.45 / fig.get_figheight(), hspace=0.12)
    std = standardize_patches(result.patches)
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    for p, (title, picks) in enumerate(panels):
        ax = fig.add_subplot(grid[p])
        ax.set_axis_off()
        ax.set_title(title, fontsize=9, fontweight="bold", loc="left")
        canvas = np.full((rows_per * step, cols * step - gap), np.nan, np.float32)
        for j, i in enumerate(picks):
            r, c = (j // cols) * step + gap, (j % cols) * step
            canvas[r:r + size, c:c + size] = std[i]
            tag = "s" if result.is_synthetic[i] else "r"
            ax.text(c + size / 2, r - gap * 0.15, f"{tag}{result.image[i]} p={result.scores[i]:.2f}", fontsize=6,
                    ha="center", va="bottom")
        ax.imshow(canvas, cmap=cmap, vmin=-3, vmax=3, interpolation="nearest")
    fig.suptitle(f"realism judge: held-out AUC {result.auc:.3f} ± {result.auc_std:.3f} (0.5 = cannot tell); "
                 "patches standardized, grey = ±3 std", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def report_markdown(result: JudgeResult, synthetic: str = "synthetic", real: str = "real") -> str:
    """A short human summary of ``result`` (Markdown)."""
    s = result.settings
    verdict = ("cannot tell them apart" if result.auc < 0.6 else "tells them apart partly" if result.auc < 0.8
               else "tells them apart easily")
    folds = ", ".join(f"{a:.3f}" for a in result.auc_folds)
    real_scores = result.image_scores()["real"]
    fake_looking = [f"#{i} ({p:.2f})" for i, p in enumerate(real_scores) if p > 0.5]
    odd = ("" if not fake_looking else
           f"Real images the judge scores as synthetic (mean p(synthetic) > 0.5; image index in sorted order): "
           f"{', '.join(fake_looking)} — they differ from the other real images, which lowers their fold's AUC.\n\n")
    return (
        f"# Realism judge\n\n"
        f"Synthetic `{synthetic}` ({result.n_images['synthetic']} images) vs real `{real}` "
        f"({result.n_images['real']} images).\n\n"
        f"**Held-out AUC {result.auc:.3f} ± {result.auc_std:.3f}** (mean ± std over {len(result.auc_folds)} folds: "
        f"{folds}) — the judge {verdict}. 0.5 = indistinguishable, 1.0 = every patch told apart.\n\n"
        f"| measure | value |\n|---|---|\n"
        f"| C2ST AUC (p(synthetic), held out by source image) | {result.auc:.3f} ± {result.auc_std:.3f} |\n"
        f"| same, all held-out scores pooled | {result.auc_pooled:.3f} |\n"
        f"| power-spectrum distance (RMS log10 PSD, decades) | {result.distance['psd']:.3f} |\n"
        f"| histogram distance (W1, standardized intensities) | {result.distance['histogram']:.4f} |\n"
        f"{_census_rows(result)}\n"
        f"{odd}"
        f"Settings: {s['patch']} px patches, {result.n_patches['real']} per side, {s['folds']} folds by source image, "
        f"{s['steps']} steps x {s['batch']} per fold, lr {s['lr']}, scale {s['scale']}, seed {s['seed']}, "
        f"device {s['device']}, {s['threads']} thread(s); {result.seconds:.0f} s.\n"
        f"Patches are standardized one by one (mean 0, std 1), so brightness and contrast are no cue.\n\n"
        f"`sheet.png`: synthetic patches judged most synthetic, the hardest fakes, and real patches judged most real.\n"
    )


def _census_rows(result: JudgeResult) -> str:
    """Table rows of the blob census (empty when the result has none)."""
    if result.distance.get("blobs") is None or not result.census:
        return ""
    real, syn = result.census["real"], result.census["synthetic"]
    edges = ["∞" if e is None else f"{e:g}" for e in real["depth_edges"]]
    bins = " · ".join(f"{a}–{b}" for a, b in zip(edges[:-1], edges[1:]))

    def counts(c):
        return " · ".join(f"{v:.0f}" for v in c["per_mpx"])

    def diam(c):
        d = c["deep_diameter_px"]
        return "—" if d is None else " / ".join(f"{v:.1f}" for v in d)

    return (f"| dark-blob census distance (RMS log10 blobs/Mpx over depth bins, decades) | "
            f"{result.distance['blobs']:.3f} |\n"
            f"| dark blobs per Mpx by depth ({bins}): real | {counts(real)} |\n"
            f"| same, synthetic | {counts(syn)} |\n"
            f"| blobs deeper than {real['deep']:g}: per Mpx real / synthetic | "
            f"{real['deep_per_mpx']:.0f} / {syn['deep_per_mpx']:.0f} |\n"
            f"| their diameters p10 / p50 / p90 (px): real · synthetic | {diam(real)} · {diam(syn)} |\n")


def report_json(result: JudgeResult, synthetic: str = "synthetic", real: str = "real") -> dict:
    """The content of ``realism.json``: :meth:`JudgeResult.to_dict`, the inputs' names, the mean
    p(synthetic) of every image (``image_scores``) and every held-out patch (``patches``)."""
    per_image = {k: [None if v != v else round(float(v), 5) for v in a] for k, a in result.image_scores().items()}
    return {"synthetic": str(synthetic), "real": str(real), **result.to_dict(), "image_scores": per_image,
            "patches": result.patch_table()}


def write_report(out_dir: str | os.PathLike, result: JudgeResult, synthetic: str = "synthetic", real: str = "real", *,
                 overwrite: bool = False) -> list[Path]:
    """Write :data:`REPORT_FILES` (``realism.json``, ``realism.md``, ``sheet.png``) into ``out_dir`` (created).

    Each file is written atomically; an existing one is replaced only with ``overwrite``.
    ``synthetic`` and ``real`` name the inputs in the report.  Returns the files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"realism.json": (json.dumps(report_json(result, synthetic, real), indent=2) + "\n").encode(),
             "realism.md": report_markdown(result, str(synthetic), str(real)).encode(),
             "sheet.png": sheet_png(result)}
    return [atomic_write_bytes(out_dir / name, data, overwrite=overwrite) for name, data in files.items()]
