"""PyTorch datasets over a simgen HDF5 file or a sharded set (``manifest.json``).

* :class:`SimgenDataset` — map-style: ``ds[i]`` → ``(image, target)``.
* :class:`SimgenIterableDataset` — streams contiguous blocks of each shard, split across
  DataLoader workers (and optionally distributed ranks), optionally shuffled per epoch.

``image`` is a ``(1, H, W)`` float32 tensor in [0, 1].  ``target`` is a dict in the
torchvision detection layout, with keys only for what the data stores:

* ``boxes`` (K, 4) float32 ``x0, y0, x1, y1`` in pixels and ``labels`` (K,) int64 class ids
  (``+ label_offset``; pass 1 for torchvision detectors that reserve 0 for background);
* ``masks`` (K, H, W) uint8, one binary mask per instance — matched to the boxes through their
  ``instance`` column when it exists, else one per instance id in increasing order;
* ``points`` (P, 2) float32 ``x, y`` and ``charges`` (P,) int64 (film defects);
* ``image_id`` int64 scalar: the global sample index.

File handles are opened lazily in the process that reads, never inherited: each
object remembers the pid that opened its handles and drops them (without using
them) in a forked DataLoader worker; pickling (spawned workers) carries no handles.
No ``worker_init_fn`` is needed.

Example
-------
>>> ds = SimgenDataset("film_shards/manifest.json")                      # doctest: +SKIP
>>> dl = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2,   # doctest: +SKIP
...                                  collate_fn=collate_detection)
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from simgen.datasets.h5io import Dataset as H5Dataset
from simgen.datasets.h5io import open_dataset, to_float_image
from simgen.datasets.shards.read import ShardedDataset, locate_sample
from simgen.datasets.shards.write import is_manifest_path
from simgen.errors import ParameterError
from simgen.rng import check_seed

__all__ = ["SimgenDataset", "SimgenIterableDataset", "collate_detection", "dataset_files"]

#: One sample: a ``(1, H, W)`` image tensor and its target dict.
Sample: TypeAlias = tuple[torch.Tensor, dict[str, Any]]
#: ``transform(image, target) -> (image, target)``.
Transform: TypeAlias = Callable[[torch.Tensor, dict[str, Any]], Sample]


def dataset_files(path: str | PathLike) -> tuple[list[Path], np.ndarray]:
    """Files and global start indices ``(S + 1,)`` of a single dataset file or a sharded set.

    Validates the file (schema) or the manifest (complete, all shards present) once.
    """

    if is_manifest_path(path):
        with ShardedDataset(path) as sd:
            return list(sd.files), sd.starts.copy()
    with open_dataset(path) as ds:
        return [Path(path)], np.array([0, ds.n], np.int64)


class _Reader:
    """Per-process, lazily opened :class:`~simgen.datasets.h5io.Dataset` handles over files."""

    def __init__(self, files: Iterable[str | PathLike], starts: np.ndarray, max_open: int = 32) -> None:
        self.files = [str(f) for f in files]
        self.starts = np.asarray(starts, np.int64)
        self.n = int(self.starts[-1])
        self.max_open = max(1, int(max_open))
        self._pid: int | None = None
        self._open: OrderedDict[int, H5Dataset] = OrderedDict()

    def locate(self, i: int) -> tuple[int, int]:
        return locate_sample(self.starts, i)

    def file(self, k: int) -> H5Dataset:

        if self._pid != os.getpid():  # new process (forked worker) or first use: start afresh
            self._open = OrderedDict()
            self._pid = os.getpid()
        ds = self._open.get(k)
        if ds is None:
            ds = self._open[k] = open_dataset(self.files[k])
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(k)
        return ds

    @property
    def open_count(self) -> int:
        """Handles open in *this* process (0 in a fresh worker)."""
        return len(self._open) if self._pid == os.getpid() else 0

    def close(self) -> None:
        if self._pid == os.getpid():
            for ds in self._open.values():
                ds.close()
        self._open = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        state["_pid"] = None
        return state


class _Base:
    def _setup(self, path: str | PathLike, masks: bool, points: bool, label_offset: int, transform: Transform | None,
               max_open: int) -> None:
        if int(label_offset) != label_offset or label_offset < 0:
            raise ParameterError(f"label_offset must be a non-negative integer, got {label_offset!r}")
        self.path = Path(path)
        self.masks = bool(masks)
        self.points = bool(points)
        self.label_offset = int(label_offset)
        self.transform = transform
        files, starts = dataset_files(path)
        self._reader = _Reader(files, starts, max_open)

    def __len__(self) -> int:
        return self._reader.n

    def _sample(self, i: int) -> Sample:

        k, j = self._reader.locate(i)
        ds = self._reader.file(k)
        image = torch.from_numpy(np.ascontiguousarray(to_float_image(ds.image(j, as_float=False))))[None]
        target: dict = {"image_id": torch.tensor(int(self._reader.starts[k]) + j, dtype=torch.int64)}
        boxes = ds.rows("boxes", j)
        instance = None
        if boxes is not None:
            target["boxes"] = torch.tensor(boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float32).reshape(-1, 4))
            cls = boxes["class"].to_numpy(np.int64) if "class" in boxes else np.zeros(len(boxes), np.int64)
            target["labels"] = torch.tensor(cls + self.label_offset)
            if "instance" in boxes:
                instance = boxes["instance"].to_numpy(np.int64)
        if self.masks:
            m = ds.mask(j)
            if m is not None:
                ids = instance if instance is not None else np.unique(m[m > 0])
                target["masks"] = torch.from_numpy((m[None] == ids.reshape(-1, 1, 1)).astype(np.uint8))
        if self.points:
            pts = ds.rows("points", j)
            if pts is not None:
                target["points"] = torch.tensor(pts[["x", "y"]].to_numpy(np.float32).reshape(-1, 2))
                target["charges"] = torch.tensor(pts["charge"].to_numpy(np.int64))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def close(self) -> None:
        """Close the handles this process opened."""
        self._reader.close()


class SimgenDataset(_Base, Dataset):
    """Map-style torch dataset over one simgen ``.h5`` file or a sharded set.

    Parameters
    ----------
    path : path-like
        A dataset file, a ``manifest.json`` or a shard directory.
    masks : bool
        Include per-instance ``masks`` when the data stores instance masks.
    points : bool
        Include ``points`` / ``charges`` when the data has a points table.
    label_offset : int
        Added to class ids in ``labels`` (1 for torchvision detectors).
    transform : callable, optional
        ``transform(image, target) -> (image, target)``.
    max_open : int
        Maximum number of files each process keeps open.
    """

    def __init__(self, path: str | PathLike, *, masks: bool = True, points: bool = True, label_offset: int = 0,
                 transform: Transform | None = None, max_open: int = 32) -> None:
        self._setup(path, masks, points, label_offset, transform, max_open)

    def __getitem__(self, i: int) -> Sample:
        return self._sample(i)


class SimgenIterableDataset(_Base, IterableDataset):
    """Streaming torch dataset: each DataLoader worker reads its own blocks of consecutive samples.

    The samples are cut into blocks of at most ``block_size`` consecutive indices that never
    straddle a shard; blocks are dealt round-robin to the ranks, and each rank's blocks
    round-robin to its DataLoader workers, so every sample is produced exactly once per epoch.  With ``shuffle``, block order and the order inside each block
    are permuted from ``(seed, epoch)`` — call :meth:`set_epoch` between epochs.

    Parameters
    ----------
    path, masks, points, label_offset, transform, max_open
        As for :class:`SimgenDataset`.
    shuffle : bool
    seed : int
    block_size : int
        Samples per block (locality vs. mixing).
    rank, world_size : int
        Position of this process in a distributed job (defaults: a single process).
    """

    def __init__(self, path: str | PathLike, *, shuffle: bool = False, seed: int = 0, block_size: int = 256,
                 rank: int = 0, world_size: int = 1, masks: bool = True, points: bool = True, label_offset: int = 0,
                 transform: Transform | None = None, max_open: int = 4) -> None:

        if int(block_size) != block_size or block_size < 1:
            raise ParameterError(f"block_size must be a positive integer, got {block_size!r}")
        if int(world_size) != world_size or world_size < 1 or not 0 <= rank < world_size:
            raise ParameterError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self._setup(path, masks, points, label_offset, transform, max_open)
        self.shuffle = bool(shuffle)
        self.seed = check_seed(seed)
        self.block_size = int(block_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of the next pass (same value in every rank)."""
        self.epoch = int(epoch)

    def blocks(self) -> list[tuple[int, int]]:
        """``(start, stop)`` global index ranges in this epoch's order (all consumers)."""
        starts = self._reader.starts
        blocks = [
            (a, min(a + self.block_size, int(starts[k + 1])))
            for k in range(len(starts) - 1)
            for a in range(int(starts[k]), int(starts[k + 1]), self.block_size)
        ]
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            blocks = [blocks[b] for b in rng.permutation(len(blocks))]
        return blocks

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        mine = self._rank_blocks()
        for c, (b, (a, stop)) in enumerate(mine):
            if c % n_workers != worker:
                continue
            order = np.arange(a, stop)
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch, b]).permutation(order)
            for i in order:
                yield self._sample(int(i))

    def _rank_blocks(self) -> list[tuple[int, tuple[int, int]]]:
        return [(b, blk) for b, blk in enumerate(self.blocks()) if b % self.world_size == self.rank]

    def __len__(self) -> int:
        """Samples this rank yields per epoch (over all its DataLoader workers)."""
        return sum(stop - a for _, (a, stop) in self._rank_blocks())


def collate_detection(batch: Sequence[Sample]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """DataLoader ``collate_fn``: stack images ``(B, 1, H, W)``, keep targets as a list of dicts."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
