"""Margin losses for 1-Lipschitz (certifiable) classifiers and critics; GAN critic losses."""
from .critic import CRITIC_LOSSES, critic_loss
from .hkr import hkr_loss
from .margin import margin_cross_entropy

__all__ = ["CRITIC_LOSSES", "critic_loss", "hkr_loss", "margin_cross_entropy"]
