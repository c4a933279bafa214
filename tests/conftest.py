"""Session-wide test setup.

torchmetrics (FID / KID in lipkit.metrics.image) imports torchvision whenever it is
installed, and the torchvision of the test extra cannot be imported against this machine's
CPU torch without the shim in torchvision_models.py. Applying the shim once here makes every
test independent of the order tests run in (before, image-metric tests passed only when a
zoo test had imported torchvision first: `pytest -k image_metrics` alone failed)."""
from torchvision_models import torchvision_models

torchvision_models()
