"""Image sets: sklearn's digits (ships with scikit-learn), MNIST-format idx files
(Fashion-MNIST from Debian's dataset-fashion-mnist) and torchvision sets already on disk,
plus the [0, 1] <-> [-1, 1] maps between the image metrics' range and a tanh generator's."""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checks import _check_count, _check_generator, check_labels

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian: dataset-fashion-mnist
IDX_FILES = {  # (images, labels) per split; the standard MNIST / Fashion-MNIST names
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# idx type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/ "THE IDX FILE FORMAT")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageSet:
    """images (N, 1, H, W) float32 in [0, 1], labels (N,) long, for one split."""

    name: str
    images: Tensor
    labels: Tensor
    num_classes: int
    split: str = "train"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n rows drawn uniformly with replacement (the toy sets' interface)."""
        index = torch.randint(0, len(self), (_check_count("n", n),), generator=_check_generator(generator))
        return self.images[index], self.labels[index]


def to_gan_range(images: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1], the range of a tanh generator."""
    return images * 2 - 1


def from_gan_range(images: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] (what the image metrics read); clamped, as a tanh output can round past."""
    return ((images + 1) / 2).clamp(0, 1)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (gzip or raw, by its magic bytes): 0, 0, type, ndim, then big-endian
    uint32 dims and the data in row-major order."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the file name
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (magic bytes {raw[:4]!r}; expected 0, 0, one of "
                         f"type bytes {sorted(IDX_DTYPES)}, ndim)")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + dtype.itemsize * int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes but header dims {dims} of {dtype} need {expected}")
    data = np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str, dataset: str) -> Path:
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.is_file():
            return candidate
    looked = ", ".join(f"{s}[.gz]" for pair in IDX_FILES.values() for s in pair)
    hint = ("install them with `apt-get install dataset-fashion-mnist` (Debian), or " if
            dataset == "fashion-mnist" else "")
    raise FileNotFoundError(f"{dataset}: no {stem}[.gz] in {folder}. Looked for the four idx files "
                            f"{looked}; {hint}pass root= a folder that holds them")


def _subset(images: Tensor, labels: Tensor, subset: int | None, seed: int) -> tuple[Tensor, Tensor]:
    if subset is None:
        return images, labels
    _check_count("subset", subset)
    if subset > len(labels):
        raise ValueError(f"subset={subset} > {len(labels)} available rows")
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:subset]
    return images[index], labels[index]


def load_idx_images(root: str | Path | None = None, split: str = "train", *, subset: int | None = None,
                    seed: int = 0, name: str = "fashion-mnist") -> ImageSet:
    """MNIST-format images from a folder holding the four standard idx files (.gz or raw).

    root defaults to Debian's Fashion-MNIST folder. subset: a seeded random subset of the split.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if root is None:
        if name != "fashion-mnist":
            raise ValueError(f"{name}: no default folder; pass root= a folder with the four idx files")
        root = FASHION_MNIST_DIR
    folder = Path(root)
    image_stem, label_stem = IDX_FILES[split]
    images = read_idx(_find_idx(folder, image_stem, name))
    labels = read_idx(_find_idx(folder, label_stem, name))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} do not pair up "
                         "(expected (N, H, W) and (N,))")
    if images.dtype != np.uint8:
        raise ValueError(f"{folder}: {image_stem} holds {images.dtype} pixels; lipkit reads 8-bit (ubyte) idx images")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"{folder}: {label_stem} holds {labels.dtype} labels; expected integers 0..K-1")
    y = torch.from_numpy(labels.astype(np.int64))
    classes = check_labels(y, f"{folder}/{label_stem}", every_class=split == "train")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x, y = _subset(x, y, subset, seed)
    return ImageSet(name, x, y, num_classes=classes, split=split)


def load_digits(split: str = "train", *, test_fraction: float = 0.2, subset: int | None = None,
                seed: int = 0) -> ImageSet:
    """sklearn's 8x8 digits (1797 images, values 0..16 scaled to [0, 1]).

    The set has no official split: a stratified split with a fixed seed (0) makes train and
    test disjoint and the same in every run; `seed` only picks `subset`.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r}: expected in (0, 1)")
    bunch = sk_load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.images, bunch.target, test_size=test_fraction, random_state=0, stratify=bunch.target)
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    images = torch.from_numpy((x / 16.0).astype(np.float32)).unsqueeze(1)
    images, labels = _subset(images, torch.from_numpy(y.astype(np.int64)), subset, seed)
    return ImageSet("digits", images, labels, num_classes=10, split=split)


def load_torchvision(name: str, root: str | Path, split: str = "train") -> ImageSet:
    """A torchvision data set already on disk (never downloads), if torchvision is installed."""
    try:
        import torchvision
    except ImportError as error:
        raise ImportError("load_torchvision needs torchvision (optional, not a lipkit dependency)") from error
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if not hasattr(torchvision.datasets, name):
        raise ValueError(f"torchvision.datasets has no {name!r}")
    data = getattr(torchvision.datasets, name)(str(root), train=split == "train", download=False)
    images = torch.as_tensor(np.asarray(data.data), dtype=torch.float32) / 255.0
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(data.targets), dtype=torch.long)
    return ImageSet(name, images.contiguous(), labels, int(labels.max()) + 1, split)
