"""Data: the an8Flower-synth renderer and dataset, the official an8Flower layout, and any image folder with masks
(streamed from the files for the evaluation)."""

from .an8flower import SPLITS, An8Flower, default_cache, one_per_class
from .files import MaskedImages, masked_folder
from .render import (
    COLOURS,
    PARTS,
    VARIANTS,
    class_difference,
    class_names,
    coloured_parts,
    render,
    render_classes,
    render_scenes,
    rotation_sweep,
    sample_scenes,
)

__all__ = [
    "An8Flower",
    "MaskedImages",
    "masked_folder",
    "SPLITS",
    "default_cache",
    "one_per_class",
    "COLOURS",
    "PARTS",
    "VARIANTS",
    "class_difference",
    "class_names",
    "coloured_parts",
    "render",
    "render_classes",
    "rotation_sweep",
    "render_scenes",
    "sample_scenes",
]
