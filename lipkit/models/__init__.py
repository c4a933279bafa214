"""Networks: the critics, generators and classifiers lipkit trains (networks.py) and small
seeded example networks for the CLI, tests and benchmarks (examples.py)."""
from . import examples
from .networks import (
    LEAK,
    Generator,
    ProjectionCritic,
    cnn_classifier,
    conv_critic,
    conv_feature_dim,
    conv_features,
    conv_generator,
    mlp,
    mlp_classifier,
    mlp_critic,
    mlp_generator,
    projection_conv_critic,
    projection_mlp_critic,
)

__all__ = ["LEAK", "Generator", "ProjectionCritic", "cnn_classifier", "conv_critic", "conv_feature_dim",
           "conv_features", "conv_generator", "examples", "mlp", "mlp_classifier", "mlp_critic", "mlp_generator",
           "projection_conv_critic", "projection_mlp_critic"]
