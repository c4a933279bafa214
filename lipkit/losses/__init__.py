"""Margin losses for 1-Lipschitz (certifiable) classifiers and critics."""
from .hkr import hkr_loss
from .margin import margin_cross_entropy

__all__ = ["hkr_loss", "margin_cross_entropy"]
