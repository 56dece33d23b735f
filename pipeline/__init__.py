"""Meaningful-perturbation saliency (Fong & Vedaldi, ICCV 2017) at dataset scale."""

__version__ = "0.1.0"
