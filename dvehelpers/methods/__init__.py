"""Explanation methods; importing this package registers every one of them in ``dvehelpers.METHODS``."""

from . import activation, cam, gradients

__all__ = ["activation", "cam", "gradients"]
