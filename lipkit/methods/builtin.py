"""lipkit's own Lipschitz methods, one entry each, with their published hyperparameters
(ANCHORS.md "Published results"; SEED_NOTES.md).

| method            | constraint                        | penalty                  | critic optimizer   | clf lam |
| none              | -                                 | -                        | Adam 1e-4 (0, 0.9) | -       |
| clip              | clip c=0.01, project, + biases    | -                        | RMSProp 5e-5 (*)   | -       |
| frobenius         | ||W||_F <= 1, project             | -                        | Adam 1e-4 (0, 0.9) | -       |
| frobenius-penalty | -                                 | relu(||W||_F - 1)^2 (10) | Adam 1e-4 (0, 0.9) | 1e-3    |
| gp / gp1          | -                                 | GP two-/one-sided (10)   | Adam 1e-4 (0, 0.9) | -       |
| sn / sn-conv(-certified) | spectral reparam (reshape / conv) | -                  | Adam 2e-4 (0, 0.9) | -       |
| sn-project        | spectral, project (Keras-style)   | -                        | Adam 2e-4 (0, 0.9) | -       |
| sn+gp             | spectral reparam                  | GP (10)                  | Adam 2e-4 (0, 0.9) | -       |
| torch-sn (+gp)    | torch's parametrizations SN       | (GP 10)                  | Adam 2e-4 (0, 0.9) | -       |
| lipnet            | GroupSort + Bjorck Linears + AOL (or SN) convs | -    | Adam 1e-4 (0, 0.9) | - (*2)  |
| l2/snr/igp/wgnp   | -                                 | classifier penalties     | (classifiers only) | 1e-4/1e-2/0.1/1e-2 |
(*2) a classifier trains it with the Lipschitz-margin loss (margin eps 1.5, temperature 8)
and true-norm SN convs unless --loss / --margin-eps / --temperature / --lipnet-conv say
otherwise (every other classifier method: cross-entropy at temperature 1); a critic keeps AOL.
(*) with 100 warm-up critic steps for the first 25 generator steps and every 500th (WGAN).
Every critic uses n_critic 5 (SN-GAN's ResNet setting, which pairs with a Wasserstein loss).
Toy 2-D data follow the WGAN-GP toy code instead (train/presets.py: betas (0.5, 0.9), GP 0.1).
sn-project is the seed's trap (SEED_NOTES section 6), kept to measure it: the same
normalization as sn, applied to the raw weight after each step, so the gradients are those of
the unnormalized function. Classifier lams are starting points: tune them (compare-clf --tune).
"""
from __future__ import annotations

from .attach import lipkit_constraint, lipnet, torch_sn, wgan_clip
from .registry import Method, register_method
from .terms import FROBENIUS, GP, GP1, IGP, L2, SNR, WGNP

ADAM = {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5}
ADAM_SN = {**ADAM, "lr": 2e-4, "sn_iter": 1}
NO_PENALTY = {"lam": 0.0}  # a classifier method without a penalty: lam is unused and must stay 0
# lipnet as a certified classifier (*2): true-norm SN convs (AOL left half the Lipschitz budget
# unused: certified 0.47, empirical 0.33 on Fashion-MNIST) and the margin its certificate needs,
# wide (eps 1.5, at temperature 8: a 1-Lipschitz net's logits are small). Chosen on a probe
# (10k Fashion-MNIST images, 600 steps; README "1-Lipschitz classifiers"): margin eps 0.5 / 1 /
# 1.5 / 2.5 certified 0.61 / 0.69 / 0.71 / 0.70 at radius 0.5; temperature 4 / 8 / 16 alike.
LIPNET_CLASSIFIER = {**NO_PENALTY, "loss": "margin", "margin_eps": 1.5, "temperature": 8.0, "lipnet_conv": "sn-conv"}


def _spectral(operator: str = "reshape", mode: str = "reparam", certified: bool = False):
    # sn_bound is a classifier option (train-clf --sn-bound); critics normalize to 1.
    return lipkit_constraint("spectral", mode, lambda hp: {"n_iter": hp["sn_iter"], "bound": hp.get("sn_bound", 1.0),
                                                           "operator": operator, "certified": certified})


for _method in (
    Method("none", "no Lipschitz control", critic=ADAM, classifier=NO_PENALTY),
    Method("clip", "WGAN weight clipping of every parameter after each step", constraint=wgan_clip,
           critic={"optimizer": "rmsprop", "lr": 5e-5, "n_critic": 5, "warmup_n_critic": 100, "clip_c": 0.01}),
    Method("frobenius", "||W||_F <= max_norm, projected after each step",
           constraint=lipkit_constraint("frobenius", "project", lambda hp: {"max_norm": hp["max_norm"]}),
           critic={**ADAM, "max_norm": 1.0}, classifier=NO_PENALTY),
    Method("frobenius-penalty", "penalty sum relu(||W||_F - max_norm)^2", penalties=(FROBENIUS,),
           critic={**ADAM, "max_norm": 1.0, "penalty_weight": 10.0}, classifier={"lam": 1e-3},
           grid=(1e-4, 1e-3, 1e-2)),
    Method("gp", "WGAN-GP: (||grad f(x_interp)|| - 1)^2", penalties=(GP,), critic={**ADAM, "gp_lambda": 10.0}),
    Method("gp1", "one-sided GP (GP+): relu(||grad f(x_interp)|| - 1)^2", penalties=(GP1,),
           critic={**ADAM, "gp_lambda": 10.0}),
    Method("sn", "spectral normalization of the reshaped weight (SN-GAN), a reparametrization",
           constraint=_spectral(), critic=ADAM_SN, classifier=NO_PENALTY),
    Method("sn-conv", "spectral normalization of every conv's TRUE operator norm, a reparametrization",
           constraint=_spectral("conv"), critic=ADAM_SN, classifier=NO_PENALTY),
    Method("sn-conv-certified", "sn-conv dividing by the Gram upper bound of each conv's norm: <= 1 guaranteed",
           constraint=_spectral("conv", certified=True), critic=ADAM_SN, classifier=NO_PENALTY),
    Method("sn+gp", "spectral normalization and WGAN-GP", constraint=_spectral(), penalties=(GP,),
           critic={**ADAM_SN, "gp_lambda": 10.0}),
    Method("sn-project", "the trap: spectral normalization applied to the raw weight after each step",
           constraint=_spectral(mode="project"), critic=ADAM_SN),
    Method("torch-sn", "torch.nn.utils.parametrizations.spectral_norm on every Conv2d / Linear",
           constraint=torch_sn, critic=ADAM_SN),
    Method("torch-sn+gp", "torch's spectral normalization and WGAN-GP", constraint=torch_sn, penalties=(GP,),
           critic={**ADAM_SN, "gp_lambda": 10.0}),
    Method("lipnet", "gradient-norm-preserving critic: ReLUs -> GroupSort, Bjorck-orthonormal Linears, AOL convs",
           constraint=lipnet, critic={**ADAM, "group_size": 2, "bjorck_iters": 20, "bjorck_order": 2,
                                                "lipnet_conv": "aol"},
           classifier=LIPNET_CLASSIFIER),
    Method("l2", "L2 weight decay as a penalty: sum ||W||_F^2", penalties=(L2,), classifier={"lam": 1e-4},
           grid=(1e-5, 1e-4, 1e-3)),
    Method("snr", "spectral norm regularization (Yoshida & Miyato 2017): sum sigma(W)^2", penalties=(SNR,),
           classifier={"lam": 1e-2}, grid=(1e-3, 1e-2, 1e-1)),
    Method("igp", "input-gradient penalty (double backpropagation / Jacobian norm)", penalties=(IGP,),
           classifier={"lam": 1e-1}, grid=(1e-2, 1e-1, 1.0)),
    Method("wgnp", "weight-gradient-norm penalty (arXiv 2202.03599)", penalties=(WGNP,),
           classifier={"lam": 1e-2}, grid=(1e-3, 1e-2, 1e-1)),
):
    register_method(_method)
