"""Explanation methods; importing this package registers every one of them in ``dvehelpers.METHODS``."""

from . import activation, cam, fbi, fourier, gradients, kl, vebi

__all__ = ["activation", "cam", "fbi", "fourier", "gradients", "kl", "vebi"]
