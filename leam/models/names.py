"""Names of the built-in networks, without importing any family (so validating params needs no torch).

``leam.models.registry`` registers exactly these (a test checks it); add a name here when a family
gains a network. User checkpoints come on top through ``model_zoo``.
"""

from __future__ import annotations

__all__ = ["BUILTIN_MODELS"]

BUILTIN_MODELS: tuple[str, ...] = (
    "dlib_resnet",
    "faceres",
    "faceres-deep",
    "mobileface",
    "mobilefacenet",
    "faceplugin_mfn",
    "expo_mfn",
)
