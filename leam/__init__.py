"""leam: Layer Embedding Activation Mapping for face-recognition networks.

One module per job: data and alignment (``leam.data``, ``leam.align``, ``leam.frame``), models
(``leam.models``), the LEAM maps (``leam.core``), face parsing (``leam.parsing``), analysis metrics
(``leam.metrics``), occlusion validation (``leam.occlusion``) and HTML reports (``leam.report``).

The public API (``leam.api``, the names in ``__all__``) is loaded on first use, so ``import leam`` stays
light (no torch) for code that only needs a submodule::

    import leam
    cam = leam.LEAM(model, ["layer2.1", "layer4.1"])    # any frozen nn.Module: RGB 0..255 -> (N, D)
    result = cam(images, references)                     # result.maps (N, L, s, s), result.cosine (N,)
    leam.register_model("my_net", model, input_size=112, embedding_dim=512, layers=["layer4.1"])
"""

import importlib

__version__ = "0.1.0"

__all__ = ["LEAM", "LeamMaps", "ModelSpec", "__version__", "available_models", "get_spec", "register_model"]

_LAZY = {"LEAM": "leam.api", "register_model": "leam.api", "LeamMaps": "leam.core",
         "ModelSpec": "leam.models.spec", "available_models": "leam.models.registry",
         "get_spec": "leam.models.registry"}


def __getattr__(name: str):
    # importlib rather than an import statement: no stage uses these names, so a stage's static import
    # closure (tests/test_dvc_deps.py) does not run through leam.core and torch on their account.
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'leam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
