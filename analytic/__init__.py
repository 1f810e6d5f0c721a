"""Exact mathematics of Gaussian-mixture diffusion targets: processes, mixtures, closed forms."""

from analytic.gmm import GaussianMixture
from analytic.processes import VE, VP, alpha_bar, ho_linear_betas, li_yan_betas, make_process

__all__ = [
    "VE",
    "VP",
    "GaussianMixture",
    "alpha_bar",
    "ho_linear_betas",
    "li_yan_betas",
    "make_process",
]
