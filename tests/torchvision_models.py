"""torchvision's model classes for the bound tests, imported through a shim.

Why a shim: torchvision 0.28.0 (the release paired with torch 2.13) installs from the package
registry as a CUDA build; its compiled ops (nms, roi_align, ...) cannot load against the CPU
torch of these machines, and `import torchvision` then fails in torchvision._meta_registrations
("operator torchvision::nms does not exist"), which registers fake kernels for those ops. The
model classes are pure Python and never call them, so that one module is replaced by an empty
one before the import. Only tests use torchvision; lipkit itself never imports it (torchmetrics,
the test oracle of lipkit's FID / KID, does when it is installed: conftest.py applies the shim
for every test)."""
from __future__ import annotations

import sys
import types


def torchvision_models():
    """torchvision.models, or None when torchvision is not installed."""
    try:
        import torchvision  # noqa: F401 - a working install (a CPU build, or CUDA torch)
    except ImportError:
        return None
    except RuntimeError:  # the CUDA build beside a CPU torch: see the module docstring
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    from torchvision import models

    return models


def require_torchvision_models():
    """torchvision.models; its absence is a failure, not a skip: it is a test dependency, and a
    test that skips when it is missing would pass without checking anything."""
    models = torchvision_models()
    if models is None:
        raise RuntimeError("torchvision is a test dependency and is not installed: pip install -e '.[test]'")
    return models
