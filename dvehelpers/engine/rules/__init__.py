"""Rule sets by family: the exact gradient, the backward-modifying baselines, Oramas et al.'s strided fix.
FBI's rules live with the method (:mod:`dvehelpers.methods.fbi`), built on these."""

from types import MappingProxyType

from .gradient import GRADIENT
from .modified import DECONVNET, GUIDED, SMOOTH_POLICIES, with_smooth
from .strided import GUIDED_STRIDED_FIX, RESIZE_MODES, strided_fix

#: The named rule sets, by name.
RULESETS = MappingProxyType({r.name: r for r in (GRADIENT, DECONVNET, GUIDED, GUIDED_STRIDED_FIX)})

__all__ = [
    "GRADIENT",
    "DECONVNET",
    "GUIDED",
    "GUIDED_STRIDED_FIX",
    "RULESETS",
    "RESIZE_MODES",
    "SMOOTH_POLICIES",
    "strided_fix",
    "with_smooth",
]
