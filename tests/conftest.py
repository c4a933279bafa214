"""Session-wide test setup.

Seeds: torch 2.13 seeds its default generator at random when it starts (torch.initial_seed()
differs from process to process), so a layer built at collection time (a parametrize list) or
a test drawing from the global generator without seeding got different weights at every run,
and a test that held for most draws failed for some (tests/test_conv_modes.py's stride-2
ranking case: 25 of 300 draws). Seeding once at import and again before every test makes a
run's draws those of the last run, whatever ran before.

torchmetrics (the oracle of lipkit's FID / KID in tests/test_metrics.py) imports torchvision
whenever it is installed, and the torchvision of the test extra cannot be imported against
this machine's CPU torch without the shim in torchvision_models.py. Applying the shim once
here makes every test independent of the order tests run in. lipkit itself no longer imports
torchmetrics (lipkit/metrics/feature_distances.py says why)."""
import random

import pytest
import torch
from torchvision_models import torchvision_models

torch.manual_seed(0)  # before the test modules are imported: their module-level layers
torchvision_models()


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    random.seed(0)
