"""`lipkit.examples:NAME`, the documented CLI target (`lipkit bound lipkit.examples:small_resnet`):
the example networks live in lipkit/models/examples.py; this name stays importable."""
from .models.examples import dcgan_critic, mlp, small_resnet

__all__ = ["dcgan_critic", "mlp", "small_resnet"]
