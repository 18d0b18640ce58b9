"""Explanation methods; importing this package registers every one of them in ``dvehelpers.METHODS``."""

from . import activation, cam, gradients, kl

__all__ = ["activation", "cam", "gradients", "kl"]
