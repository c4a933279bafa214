"""Data sets for lipkit's experiments, all offline and seeded.

Toy 2-D sets follow WGAN-GP's toy code (Gulrajani et al. 2017, ANCHORS.md): 8 Gaussians
and 25 Gaussians are mixtures whose centres and std are exposed (mode-coverage metrics need
them), the swiss roll is not a mixture. `rings(K)` is lipkit's many-class mixture for
conditional GANs. Image sets: sklearn's digits (ships with scikit-learn) and MNIST-format idx
files (Fashion-MNIST from Debian's dataset-fashion-mnist). Every sampler takes a
torch.Generator, so a run is reproducible and its RNG state can be checkpointed;
`TensorBatches` / `SampleBatches` are batch streams whose state_dict() resumes exactly.
"""
from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian: dataset-fashion-mnist
IDX_FILES = {  # (images, labels) per split; the standard MNIST / Fashion-MNIST names
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# idx type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/ "THE IDX FILE FORMAT")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
TOY_NAMES = ("gaussians8", "gaussians25", "swissroll", "rings")
IMAGE_NAMES = ("digits", "fashion-mnist", "mnist")
SPLITS = ("train", "test")


def _check_generator(generator: torch.Generator | None) -> torch.Generator:
    # A missing generator would silently use the global RNG: a run could not be replayed.
    if generator is None:
        raise ValueError("generator=None: pass a torch.Generator (e.g. torch.Generator().manual_seed(0)) "
                         "so that samples are reproducible")
    if generator.device.type != "cpu":
        raise ValueError(f"generator on {generator.device}: toy samplers draw on the CPU; use a CPU "
                         "generator and move the batch with .to(device)")
    return generator


def _check_count(name: str, n: int, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"{name}={n!r}: expected an int >= {minimum}")
    return n


# ----------------------------------------------------------------------------- toy 2-D sets
@dataclass(frozen=True)
class ToyMixture:
    """An equal-weight mixture of isotropic 2-D Gaussians N(centers[k], std^2 I).

    centers: (K, 2) float32; label k means "drawn from mode k". The metrics read centers and
    std (a sample is high quality within 3 std of its nearest centre).
    """

    name: str
    centers: Tensor
    std: float

    @property
    def num_classes(self) -> int:
        return self.centers.shape[0]

    @property
    def dim(self) -> int:
        return 2

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    def sample_labels(self, n: int, generator: torch.Generator) -> Tensor:
        """n mode indices, uniform over the K modes (long, shape (n,))."""
        _check_count("n", n)
        return torch.randint(0, self.num_classes, (n,), generator=_check_generator(generator))

    def sample_given(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """One point per requested label: the real batch of a conditional step."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.dim() != 1 or (labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes)):
            raise ValueError(f"labels must be a 1-D tensor of ints in [0, {self.num_classes}); "
                             f"got shape {tuple(labels.shape)}")
        noise = torch.randn(labels.shape[0], 2, generator=_check_generator(generator))
        return self.centers[labels] + self.std * noise

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x (n, 2) float32, labels (n,) long)."""
        labels = self.sample_labels(n, generator)
        return self.sample_given(labels, generator), labels


@dataclass(frozen=True)
class SwissRoll:
    """WGAN-GP's swiss roll: make_swiss_roll(noise=.25)[:, [0, 2]] / 7.5. Not a mixture."""

    name: str = "swissroll"
    noise: float = 0.25
    num_classes: int = 0  # no labels: sample() returns labels=None
    dim: int = 2
    shape: tuple[int, ...] = (2,)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, None]:
        from sklearn.datasets import make_swiss_roll

        _check_count("n", n)
        # sklearn wants a numpy seed: draw it from the torch generator so one state drives all.
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=_check_generator(generator)))
        points, _ = make_swiss_roll(n_samples=n, noise=self.noise, random_state=seed)
        return torch.from_numpy(points[:, [0, 2]] / 7.5).float(), None


def gaussians8() -> ToyMixture:
    """8 modes on a radius-2 circle, std 0.02, all divided by 1.414 (WGAN-GP toy code).

    Label k is the mode at angle k * 45 degrees.
    """
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centers = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1) / 1.414
    return ToyMixture("gaussians8", centers.float(), 0.02 / 1.414)


def gaussians25() -> ToyMixture:
    """25 modes on the grid {-2,-1,0,1,2} x 2 (i.e. -4..4 step 2), std 0.05, divided by 2.828.

    Label 5 * i + j is the mode at (2 * (i - 2), 2 * (j - 2)) / 2.828.
    """
    grid = torch.arange(-2, 3, dtype=torch.float64) * 2.0
    centers = torch.cartesian_prod(grid, grid) / 2.828
    return ToyMixture("gaussians25", centers.float(), 0.05 / 2.828)


def rings(num_classes: int = 10, *, num_rings: int | None = None, radius: float = 2.0,
          std: float | None = None) -> ToyMixture:
    """num_classes modes on concentric rings: a many-class set for conditional GANs.

    Ring j (1..R) has radius radius * j / R and a number of modes proportional to j, so
    neighbours are about equally far apart along and across rings. R defaults to the
    smallest with pi R (R + 1) >= K (arc spacing ~ ring spacing). std defaults to a tenth of
    the smallest centre distance: the 3-std balls are disjoint and a sample lies nearer its
    own centre than any other with probability ~1 - 3e-7 per neighbour (a 5-std margin).
    Labels run ring by ring from the inside, by angle within a ring.
    """
    _check_count("num_classes", num_classes, 2)
    if num_rings is None:
        num_rings = 1
        while math.pi * num_rings * (num_rings + 1) < num_classes:
            num_rings += 1
    _check_count("num_rings", num_rings)
    if num_rings > num_classes:
        raise ValueError(f"num_rings={num_rings} > num_classes={num_classes}: every ring needs a mode")
    if not radius > 0:
        raise ValueError(f"radius={radius!r}: expected > 0")
    # Largest-remainder allocation of K modes to rings in proportion to j, at least 1 each.
    share = np.arange(1, num_rings + 1) * num_classes / (num_rings * (num_rings + 1) / 2)
    counts = np.maximum(np.floor(share).astype(int), 1)
    for j in np.argsort(-(share - np.floor(share)), kind="stable"):
        if counts.sum() >= num_classes:
            break
        counts[j] += 1
    while counts.sum() > num_classes:  # only when the max(..., 1) floor over-allocated
        counts[np.argmax(counts)] -= 1
    parts = []
    for j, count in enumerate(counts, start=1):
        # Half-step stagger between rings keeps inner and outer modes from lining up.
        angles = (torch.arange(count, dtype=torch.float64) + 0.5 * (j % 2)) * (2 * math.pi / count)
        parts.append(radius * j / num_rings * torch.stack([angles.cos(), angles.sin()], dim=1))
    centers = torch.cat(parts)
    if std is None:
        distances = torch.cdist(centers, centers) + torch.eye(num_classes, dtype=torch.float64) * 1e9
        std = float(distances.min()) / 10
    if not std > 0:
        raise ValueError(f"std={std!r}: expected > 0")
    return ToyMixture(f"rings{num_classes}", centers.float(), float(std))


# ----------------------------------------------------------------------------- images
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
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    x, y = _subset(x, y, subset, seed)
    return ImageSet(name, x, y, num_classes=int(labels.max()) + 1, split=split)


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


def make_dataset(name: str, **options: Any) -> ToyMixture | SwissRoll | ImageSet:
    """A data set by name: gaussians8, gaussians25, swissroll, rings (options of rings()),
    digits (options of load_digits()), fashion-mnist / mnist (options of load_idx_images())."""
    if name in ("gaussians8", "gaussians25", "swissroll"):
        if options:
            raise ValueError(f"{name} takes no options; got {sorted(options)}")
        return {"gaussians8": gaussians8, "gaussians25": gaussians25, "swissroll": SwissRoll}[name]()
    if name == "rings":
        return rings(**options)
    if name == "digits":
        return load_digits(**options)
    if name in ("fashion-mnist", "mnist"):
        return load_idx_images(name=name, **options)
    raise ValueError(f"unknown data set {name!r}; expected one of {TOY_NAMES + IMAGE_NAMES}")


# ----------------------------------------------------------------------------- batch streams
@dataclass
class TensorBatches:
    """Endless shuffled batches of fixed tensors, one permutation per epoch.

    The permutation of epoch e comes from seed + e, so the state is three integers and a
    resumed run draws exactly the batches the interrupted one would have.
    """

    tensors: tuple[Tensor, ...]
    batch_size: int
    seed: int = 0
    epoch: int = 0
    position: int = 0
    _order: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = self.tensors[0].shape[0]
        if any(t.shape[0] != n for t in self.tensors):
            raise ValueError(f"tensors have different first dims {[t.shape[0] for t in self.tensors]}")
        if _check_count("batch_size", self.batch_size) > n:
            raise ValueError(f"batch_size={self.batch_size} > {n} rows (batches never wrap an epoch)")

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        return self

    def __next__(self) -> tuple[Tensor, ...]:
        n = self.tensors[0].shape[0]
        if self.position + self.batch_size > n:  # drop the ragged tail: every batch is full
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        index = self._order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return tuple(t[index] for t in self.tensors)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position, self._order = state["seed"], state["epoch"], state["position"], None


class SampleBatches:
    """Endless fresh batches from a sampler (a toy set's .sample): the state is the generator's."""

    def __init__(self, source: Any, batch_size: int, seed: int = 0) -> None:
        if not callable(getattr(source, "sample", None)):
            raise ValueError(f"{type(source).__name__} has no .sample(n, generator)")
        self.source, self.batch_size = source, _check_count("batch_size", batch_size)
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        return self

    def __next__(self) -> tuple[Tensor, Tensor | None]:
        return self.source.sample(self.batch_size, self.generator)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])
