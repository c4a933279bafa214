"""Data sets for lipkit's experiments, all offline and seeded.

Toy 2-D sets follow WGAN-GP's toy code (Gulrajani et al. 2017, ANCHORS.md): 8 Gaussians
and 25 Gaussians are mixtures whose centres and std are exposed (mode-coverage metrics need
them), the swiss roll is not a mixture. `rings(K)` is lipkit's many-class mixture for
conditional GANs. Image sets: sklearn's digits (ships with scikit-learn) and MNIST-format idx
files (Fashion-MNIST from Debian's dataset-fashion-mnist). Every sampler takes a
torch.Generator, so a run is reproducible and its RNG state can be checkpointed;
`TensorBatches` / `SampleBatches` are batch streams whose state_dict() resumes exactly.
Every set is one entry of the registry (registry.py): get_data(name), register_data(DataSpec(...)).
"""
from .batches import SampleBatches, TensorBatches
from .images import (
    FASHION_MNIST_DIR,
    IDX_DTYPES,
    IDX_FILES,
    SPLITS,
    ImageSet,
    from_gan_range,
    load_digits,
    load_idx_images,
    load_torchvision,
    read_idx,
    to_gan_range,
)
from .registry import DataSpec, data_names, get_data, make_dataset, register_data, unregister_data
from .toy import SwissRoll, ToyMixture, gaussians8, gaussians25, rings

__all__ = [
    "DataSpec",
    "data_names",
    "get_data",
    "register_data",
    "unregister_data",
    "FASHION_MNIST_DIR",
    "IDX_DTYPES",
    "IDX_FILES",
    "ImageSet",
    "SPLITS",
    "SampleBatches",
    "SwissRoll",
    "TensorBatches",
    "ToyMixture",
    "from_gan_range",
    "gaussians8",
    "gaussians25",
    "load_digits",
    "load_idx_images",
    "load_torchvision",
    "make_dataset",
    "read_idx",
    "rings",
    "to_gan_range",
]
