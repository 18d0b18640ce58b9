"""Models: builders (:mod:`.builders`, :mod:`.efficientnet_lite`), checkpoints (:mod:`.checkpoints`) and layers by
name (:mod:`.layers`).

Layer names follow the Caffe models the papers used for VGG/AlexNet-style nets — VGG ``conv1_1, relu1_1, …,
conv5_3, relu5_3, pool5, avgpool, flatten, fc6, relu6, fc7, relu7, fc8``; AlexNet ``conv1, relu1, pool1, …, conv5,
relu5, pool5, avgpool, flatten, fc6, relu6, fc7, relu7, fc8`` (dropout, a no-op in eval mode, is no layer) — and
call-site names for every other model (``layer4.2.relu_2``). Module paths (``"features.29"``) are accepted too.
"""

from . import checkpoints
from .builders import ARCHS, build
from .checkpoints import (
    MODEL_DIR,
    check_file,
    has_weights,
    how_to_get,
    imagenet_categories,
    load,
    num_classes,
    save,
    without_inplace,
)
from .efficientnet_lite import efficientnet_lite0
from .layers import default_cam_layer, default_size, layer_names, layer_shape, layer_table, resolve_layer

__all__ = [
    "checkpoints",
    "ARCHS",
    "MODEL_DIR",
    "build",
    "load",
    "save",
    "check_file",
    "imagenet_categories",
    "layer_names",
    "layer_table",
    "resolve_layer",
    "layer_shape",
    "has_weights",
    "how_to_get",
    "default_cam_layer",
    "default_size",
    "num_classes",
    "without_inplace",
    "efficientnet_lite0",
]
