import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.shards.read import ShardedDataset
from simgen.datasets.shards.write import generate_sharded
from simgen.datasets.torchds import SimgenDataset, SimgenIterableDataset, collate_detection
from simgen.errors import ParameterError
from simgen.simulate.film import FilmConfig, FilmSampler

N, K = 22, 6  # shards of 6, 6, 6, 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("tds") / "set"
    sampler = FilmSampler(FilmConfig(size=32, n_defects=(1, 3), min_separation=6, margin=4, box_size=8), seed=2)
    generate_sharded(out, sampler, N, K, serial=True)
    return out


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """A single file with instance masks and boxes that name their instance."""
    path = tmp_path_factory.mktemp("tds") / "masks.h5"
    with DatasetWriter(path, kind="tem", class_names=["a", "b"]) as w:
        for i in range(3):
            mask = np.zeros((16, 16), np.uint16)
            mask[1:5, 1:5] = 7
            mask[8:12, 8:14] = 3
            boxes = pd.DataFrame({"x0": [8.0, 1.0], "y0": [8.0, 1.0], "x1": [14.0, 5.0], "y1": [12.0, 5.0],
                                  "class": [1, 0], "instance": [3, 7]})
            w.append(np.full((16, 16), i / 4), boxes=boxes, mask=mask)
    return path


def test_map_dataset_matches_reader(shards):
    ds = SimgenDataset(shards, label_offset=1)
    assert len(ds) == N
    with ShardedDataset(shards) as ref:
        for i in (0, 5, 6, 21):
            image, target = ds[i]
            assert image.shape == (1, 32, 32) and image.dtype == torch.float32
            np.testing.assert_array_equal(image[0].numpy(), ref.image(i))
            boxes = ref.rows("boxes", i)
            np.testing.assert_array_equal(target["boxes"].numpy(), boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float32))
            assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == (boxes["class"] + 1).tolist()
            assert target["points"].shape == (len(ref.rows("points", i)), 2) and int(target["image_id"]) == i
            assert "masks" not in target
    ds.close()


def test_masks_follow_instance_column(masked):
    image, target = SimgenDataset(masked)[1]
    assert image.shape == (1, 16, 16) and abs(float(image.max()) - round(0.25 * 255) / 255) < 1e-6
    assert target["masks"].shape == (2, 16, 16) and target["masks"].dtype == torch.uint8
    assert int(target["masks"][0].sum()) == 24 and int(target["masks"][1].sum()) == 16  # instance 3, then 7
    assert target["labels"].tolist() == [1, 0] and "points" not in target
    assert "masks" not in SimgenDataset(masked, masks=False)[0][1]


def test_dataloader_two_workers(shards):
    ds = SimgenDataset(shards)
    first = ds[0][0]  # the parent opens a handle before the workers fork
    assert ds._reader.open_count == 1
    loader = DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate_detection)
    seen = []
    for b, (images, targets) in enumerate(loader):
        assert images.shape[1:] == (1, 32, 32) and len(targets) == images.shape[0]
        seen += [int(t["image_id"]) for t in targets]
        if b == 0:
            torch.testing.assert_close(images[0], first)
    assert seen == list(range(N))
    assert ds._reader.open_count == 1  # workers used their own handles
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._reader.open_count == 0 and int(clone[21][1]["image_id"]) == 21


def test_iterable_each_sample_once(shards, masked):
    it = SimgenIterableDataset(shards, shuffle=True, seed=1, block_size=4)
    ids = [int(t["image_id"]) for _, ts in DataLoader(it, batch_size=3, num_workers=2, collate_fn=collate_detection) for t in ts]
    assert sorted(ids) == list(range(N)) and ids != sorted(ids)
    order0 = [int(t["image_id"]) for _, t in it]
    it.set_epoch(1)
    order1 = [int(t["image_id"]) for _, t in it]
    assert sorted(order0) == sorted(order1) and order0 != order1
    assert all(b - a <= 4 for a, b in it.blocks())  # blocks never straddle shards (6, 6, 6, 4)
    ranks = [SimgenIterableDataset(shards, rank=r, world_size=2, block_size=4) for r in range(2)]
    parts = [[int(t["image_id"]) for _, t in r] for r in ranks]
    assert sorted(parts[0] + parts[1]) == list(range(N)) and not set(parts[0]) & set(parts[1])
    assert [len(r) for r in ranks] == [len(p) for p in parts]
    single = SimgenIterableDataset(masked)
    assert [int(t["image_id"]) for _, t in single] == [0, 1, 2]
    with pytest.raises(ParameterError):
        SimgenIterableDataset(shards, rank=2, world_size=2)
    with pytest.raises(ParameterError):
        SimgenIterableDataset(shards, block_size=0)


def test_single_file_and_errors(tmp_path, masked):
    with open_dataset(masked) as ref:
        assert len(SimgenDataset(masked)) == ref.n
    with pytest.raises(Exception, match="does not exist"):
        SimgenDataset(tmp_path / "none.h5")
    with pytest.raises(ParameterError):
        SimgenDataset(masked, label_offset=-1)
