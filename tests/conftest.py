"""Session-wide test setup.

torchmetrics (the oracle of lipkit's FID / KID in tests/test_metrics.py) imports torchvision
whenever it is installed, and the torchvision of the test extra cannot be imported against
this machine's CPU torch without the shim in torchvision_models.py. Applying the shim once
here makes every test independent of the order tests run in. lipkit itself no longer imports
torchmetrics (lipkit/metrics/feature_distances.py says why)."""
from torchvision_models import torchvision_models

torchvision_models()
