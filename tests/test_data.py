"""Data sets against their definitions (WGAN-GP toy code, the idx format), not snapshots."""
from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lipkit.data import (
    FASHION_MNIST_DIR,
    SampleBatches,
    SwissRoll,
    TensorBatches,
    ToyMixture,
    from_gan_range,
    gaussians8,
    gaussians25,
    load_digits,
    load_idx_images,
    make_dataset,
    read_idx,
    rings,
    to_gan_range,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def idx_bytes(array: np.ndarray, type_byte: int, dtype: str) -> bytes:
    """The idx format written by hand: 0, 0, type, ndim, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_mnist_folder(folder: Path, gz: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (5, 4, 3), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.array([0, 3, 1, 2, 3], dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 4, 3), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.array([1, 0], dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    for i, (stem, array) in enumerate(arrays.items()):
        raw = idx_bytes(array, 0x08, ">u1")
        # mix gz and raw files in one folder when gz=True: both spellings must be accepted
        if gz and i % 2 == 0:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_exactly(tmp_path: Path, gz: bool) -> None:
    cases = [(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08, ">u1"),
             (np.array([-70000, 5, 123456], dtype=np.int32), 0x0C, ">i4"),
             (np.array([[1.5, -2.25]], dtype=np.float32), 0x0D, ">f4")]
    for i, (array, type_byte, dtype) in enumerate(cases):
        raw = idx_bytes(array, type_byte, dtype)
        path = tmp_path / f"a{i}"
        path.write_bytes(gzip.compress(raw) if gz else raw)
        out = read_idx(path)
        assert out.shape == array.shape and out.dtype == array.dtype
        np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(idx_bytes(np.zeros((3, 2), np.uint8), 0x08, ">u1")[:-1])
    with pytest.raises(ValueError, match="bytes but header dims"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_images_folder(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist_folder(tmp_path / "m", gz)
    train = load_idx_images(tmp_path / "m", "train", name="mnist")
    assert train.images.shape == (5, 1, 4, 3) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.long and train.num_classes == 4 and train.shape == (1, 4, 3)
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255).unsqueeze(1)
    assert torch.equal(train.images, expected)
    assert train.labels.tolist() == [0, 3, 1, 2, 3]
    test = load_idx_images(tmp_path / "m", "test", name="mnist")
    assert test.labels.tolist() == [1, 0] and len(test) == 2
    sub1 = load_idx_images(tmp_path / "m", subset=3, seed=4, name="mnist")
    sub2 = load_idx_images(tmp_path / "m", subset=3, seed=4, name="mnist")
    assert len(sub1) == 3 and torch.equal(sub1.images, sub2.images)
    with pytest.raises(ValueError, match="subset=6"):
        load_idx_images(tmp_path / "m", subset=6, name="mnist")


def test_missing_folder_error_names_folder_files_and_apt(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_idx_images(missing)
    message = str(info.value)
    assert str(missing) in message and "train-images-idx3-ubyte" in message
    assert "t10k-labels-idx1-ubyte" in message and "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(ValueError, match="split='val'"):
        load_idx_images(missing, "val")


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package() -> None:
    test = make_dataset("fashion-mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28) and test.num_classes == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert 0 <= float(test.images.min()) and float(test.images.max()) == 1.0


def test_digits_split_range_and_gan_range() -> None:
    train, test = load_digits("train"), load_digits("test")
    assert train.images.shape == (1437, 1, 8, 8) and len(test) == 360 and train.num_classes == 10
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    assert torch.equal(load_digits("test").images, test.images)  # the split is fixed
    g = to_gan_range(test.images)
    assert float(g.min()) == -1.0 and float(g.max()) == 1.0
    assert torch.allclose(from_gan_range(g), test.images)


@pytest.mark.parametrize("mixture, radius, std", [
    (gaussians8(), 2 / 1.414, 0.02 / 1.414), (gaussians25(), None, 0.05 / 2.828)])
def test_wgan_gp_mixtures_match_definition(mixture: ToyMixture, radius: float | None, std: float) -> None:
    assert mixture.std == pytest.approx(std)
    if radius is not None:
        assert torch.allclose(mixture.centers.norm(dim=1), torch.full((8,), radius))
    else:
        assert mixture.num_classes == 25
        assert sorted({round(v * 2.828, 4) for v in mixture.centers.flatten().tolist()}) == [-4, -2, 0, 2, 4]
    x, labels = mixture.sample(20000, gen(1))
    assert x.shape == (20000, 2) and labels.shape == (20000,) and x.dtype == torch.float32
    for k in range(mixture.num_classes):
        points = x[labels == k]
        # the mean of n_k draws is within 5 standard errors of its centre; the spread is std
        assert (points.mean(0) - mixture.centers[k]).abs().max() < 5 * std / math.sqrt(len(points))
        assert points.std(0).mean() == pytest.approx(std, rel=0.15)
    counts = torch.bincount(labels, minlength=mixture.num_classes).double()
    assert counts.min() > 0.8 * counts.mean()  # equal weights


def test_samplers_are_seeded() -> None:
    for data in (gaussians8(), rings(10), SwissRoll()):
        a, b, c = data.sample(50, gen(3)), data.sample(50, gen(3)), data.sample(50, gen(4))
        assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="generator=None"):
        gaussians8().sample(5, None)


@pytest.mark.parametrize("k", [10, 100])
def test_rings_labels_are_nearest_centre(k: int) -> None:
    data = rings(k)
    assert data.centers.shape == (k, 2) and data.num_classes == k
    gaps = torch.cdist(data.centers, data.centers) + torch.eye(k) * 1e9
    assert float(gaps.min()) == pytest.approx(10 * data.std, rel=1e-5)  # 3-std balls disjoint
    assert len({round(float(r), 5) for r in data.centers.norm(dim=1)}) > 1  # several rings
    x, labels = data.sample(20000, gen(2))
    assert torch.equal(torch.cdist(x, data.centers).argmin(1), labels)
    assert set(labels.tolist()) == set(range(k))
    given = torch.tensor([3, 3, 0])
    assert torch.equal(torch.cdist(data.sample_given(given, gen()), data.centers).argmin(1), given)


def test_swissroll_and_make_dataset() -> None:
    x, labels = make_dataset("swissroll").sample(1000, gen())
    assert x.shape == (1000, 2) and labels is None and x.abs().max() < 2.5
    assert make_dataset("rings", num_classes=7).num_classes == 7
    assert make_dataset("digits", split="test").shape == (1, 8, 8)
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        make_dataset("cifar")
    with pytest.raises(ValueError, match="num_classes=1"):
        rings(1)
    with pytest.raises(ValueError, match="takes no options"):
        make_dataset("gaussians8", std=1.0)


def test_tensor_batches_resume_exactly() -> None:
    data = torch.arange(10)
    stream = TensorBatches((data, data * 2), batch_size=3, seed=5)
    epoch0 = torch.cat([next(stream)[0] for _ in range(3)])
    assert len(set(epoch0.tolist())) == 9  # a permutation per epoch, ragged tail dropped
    state = stream.state_dict()
    ahead = [next(stream)[1] for _ in range(5)]
    resumed = TensorBatches((data, data * 2), batch_size=3, seed=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, next(resumed)[1]) for a in ahead)


def test_sample_batches_resume_exactly() -> None:
    stream = SampleBatches(rings(10), batch_size=4, seed=1)
    next(stream)
    state = {k: v.clone() for k, v in stream.state_dict().items()}
    ahead = [next(stream) for _ in range(3)]
    resumed = SampleBatches(rings(10), batch_size=4, seed=99)
    resumed.load_state_dict(state)
    for x, labels in ahead:
        x2, labels2 = next(resumed)
        assert torch.equal(x, x2) and torch.equal(labels, labels2)
