"""IR and IR-SE backbones of face.evoLVe, AdaFace and CVLface, built from a state dict's own keys and shapes.

Why from the keys: the published IR-18/34/50/100/152/200 networks share one module layout (``input_layer``,
``body.<k>`` blocks of ``shortcut_layer`` + ``res_layer``, ``output_layer``) but not one block. face.evoLVe's
``bottleneck_IR`` branch is ``[BN, Conv3x3, PReLU, Conv3x3(stride), BN]`` (+ ``SEModule`` as entry 5 in
IR-SE), AdaFace's ``BasicBlockIR`` adds a BN after the first conv, its ``BottleneckIR`` (> 100 layers) is
``[BN, Conv1x1, BN, PReLU, Conv3x3, BN, PReLU, Conv1x1(stride), BN]`` and its SE sits in ``res_layer.se_block``.
A fixed table would fit one of them; reading each ``res_layer`` entry from its keys fits all of them:

- a 4-D ``weight``: ``Conv2d`` (kernel from the shape, padding ``k // 2``, a bias only where a ``bias`` key is);
- ``running_mean``: ``BatchNorm2d`` (``BatchNorm1d`` after the ``Linear`` of ``output_layer``), affine only
  where ``weight`` / ``bias`` keys are (AdaFace's last BN has none);
- a 1-D ``weight`` alone: ``PReLU``; a 2-D ``weight``: ``Linear`` (``output_layer`` only);
- ``fc1`` / ``fc2``: squeeze-and-excitation, ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with 1x1 convs.

Strides are not in the weights. Every published config (``[2,2,2,2]``, ``[3,4,6,3]``, ``[3,4,14,3]``,
``[3,13,30,3]``, ``[3,8,36,3]``, ``[3,24,36,3]``) starts each stage with a stride-2 block, so block 0 and
every block whose output channels differ from the previous block's have stride 2, on the *last* conv of
``res_layer`` and on the shortcut (``shortcut_layer.0`` conv 1x1 + ``.1`` BN, or, without keys,
``MaxPool2d(1, stride)``); the others have stride 1. The ``Linear`` of ``output_layer`` fixes the input size
this implies (7x7 features after 4 halvings: 112 pixels); a different ``input_size`` is one line.

Files: ``torch.save`` checkpoints, a plain state dict or a Lightning ``.ckpt`` (its ``state_dict``), with
DataParallel ``module.``, Lightning ``model.`` and CVLface ``net.`` prefixes removed and ``head.*`` (the
margin head) dropped. A ``.safetensors`` file (CVLface's Hugging Face copies) is not read: the error says
how to convert it.

Output: the un-normalised embedding, i.e. ``output_layer``'s output (face.evoLVe returns exactly that;
AdaFace returns ``(embedding / norm, norm)``, whose product is this). Input: RGB 0..255 (N, 3, s, s),
normalised by the ``normalise`` module given to :func:`build_from_state_dict` (the zoo entry's
``channel_order`` / ``mean`` / ``std``: AdaFace BGR, 127.5, 127.5; face.evoLVe RGB, 127.5, 127.5).

Default LEAM layers (:func:`stage_layers`): ``input_layer`` and the output of each stage's last block
(``body.<k>``), shallow to deep, one per resolution (112, 56, 28, 14, 7 pixels at 112 input). They are the
whole residual features of each resolution, as arcface_torch's ``layer<k>.<last>`` are; the last *module* to
finish at a resolution (:func:`leam.models.zoo.module_resolution_layers`) would instead be a branch-internal
PReLU of the next stage's first block, which misses the shortcut path.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from leam.errors import LeamError

__all__ = ["EvolveIR", "IRBlock", "SEModule", "build_from_state_dict", "load_evolve_ir", "read_state_dict",
           "stage_layers"]

_PARTS = ("input_layer", "body", "output_layer")
_WRAPPERS = ("module", "model", "net")
_BN_KEYS = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


class SEModule(nn.Module):
    """Squeeze-and-excitation of IR-SE: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))``, fc1/fc2 1x1 convs."""

    def __init__(self, fc1: nn.Conv2d, fc2: nn.Conv2d) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.relu, self.fc2, self.sigmoid = fc1, nn.ReLU(), fc2, nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class IRBlock(nn.Module):
    """``res_layer(x) + shortcut_layer(x)``; ``stride`` (1 or 2) is the one inferred for the block."""

    def __init__(self, shortcut_layer: nn.Module, res_layer: nn.Sequential, stride: int) -> None:
        super().__init__()
        self.shortcut_layer, self.res_layer, self.stride = shortcut_layer, res_layer, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class EvolveIR(nn.Module):
    """RGB 0..255 (N, 3, s, s) -> ``normalise`` -> input_layer -> body -> output_layer -> embedding (N, D)."""

    def __init__(self, input_layer: nn.Sequential, body: nn.Sequential, output_layer: nn.Sequential) -> None:
        super().__init__()
        self.input_layer, self.body, self.output_layer = input_layer, body, output_layer
        self.normalise: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(self.normalise(x))))


def _fail(where: str, message: str) -> LeamError:
    return LeamError(f"{where}: {message}")


def _strip_wrappers(key: str) -> str:
    """``module.model.net.input_layer.0.weight`` -> ``input_layer.0.weight``: DataParallel (``module.``),
    Lightning (``model.``) and CVLface (``net.``) wrappers removed from the front of a key."""
    while key.split(".")[0] in _WRAPPERS:
        key = key.partition(".")[2]
    return key


def read_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a checkpoint file: a plain state dict or a Lightning ``.ckpt`` (its
    ``state_dict``), wrapper prefixes removed (:func:`_strip_wrappers`) and ``head.*`` (the margin head of
    training) dropped. ``where`` names the source in the one-line errors (``model_zoo.x``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling a non-checkpoint raises many types
        with open(path, "rb") as handle:
            head = handle.read(9)
        hint = ("; a .safetensors file: save safetensors.torch.load_file(path) with torch.save first"
                if len(head) == 9 and head[8:9] == b"{" else "")
        raise _fail(where, f"{Path(path).name} is not a torch checkpoint ({type(exc).__name__}: "
                           f"{(str(exc).strip().splitlines() or [''])[0][:120]}){hint}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(where, f"{Path(path).name} is not a state dict (a mapping of names to tensors, or a "
                           "Lightning checkpoint with one under state_dict)")
    tensors = {}
    for key, value in state.items():
        key = _strip_wrappers(str(key))
        if not key.startswith("head."):
            tensors[key] = value
    unknown = sorted(key for key in tensors if key.split(".")[0] not in _PARTS)
    missing = [part for part in _PARTS if not any(key.startswith(part + ".") for key in tensors)]
    if unknown or missing:
        found = [f"{len(unknown)} unknown key(s) {unknown[:3]}"] * bool(unknown) + [f"missing {missing}"] * bool(missing)
        raise _fail(where, f"{Path(path).name} is not an IR state dict: {', '.join(found)} (expected "
                           "input_layer.*, body.<k>.*, output_layer.*; Lightning checkpoints: model.*)")
    return tensors


def _children(state: Mapping[str, torch.Tensor], prefix: str) -> OrderedDict[str, dict[str, torch.Tensor]]:
    """``{child: {rest of key: tensor}}`` of the keys under ``prefix.``: integer names in numeric order, then
    named ones (``se_block``) in the order they appear."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(prefix + "."):
            child, _, rest = key[len(prefix) + 1:].partition(".")
            groups.setdefault(child, {})[rest] = value
    order = sorted((c for c in groups if c.isdigit()), key=int) + [c for c in groups if not c.isdigit()]
    return OrderedDict((child, groups[child]) for child in order)


def _entry(where: str, keys: dict[str, torch.Tensor], after_linear: bool) -> nn.Module:
    """One Sequential entry from its keys (module docstring); a shape no rule fits is one line."""
    names, weight = set(keys), keys.get("weight")
    if names and {name.split(".")[0] for name in names} == {"fc1", "fc2"}:
        fc1, fc2 = (_entry(f"{where}.{fc}", {k.partition(".")[2]: v for k, v in keys.items() if k.startswith(fc)},
                           after_linear) for fc in ("fc1", "fc2"))
        if isinstance(fc1, nn.Conv2d) and isinstance(fc2, nn.Conv2d):
            return SEModule(fc1, fc2)
    elif "running_mean" in names and names <= _BN_KEYS:
        affine = "weight" in names
        module = (nn.BatchNorm1d if after_linear else nn.BatchNorm2d)(keys["running_mean"].numel(), affine=affine)
        if affine == ("bias" in names):
            return module
    elif weight is not None and weight.ndim == 4 and names <= {"weight", "bias"}:
        out_c, in_c, kh, kw = weight.shape
        return nn.Conv2d(in_c, out_c, (kh, kw), 1, (kh // 2, kw // 2), bias="bias" in names)
    elif weight is not None and weight.ndim == 2 and names <= {"weight", "bias"}:
        return nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in names)
    elif weight is not None and weight.ndim == 1 and names == {"weight"}:
        return nn.PReLU(weight.numel())
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(keys.items()))
    raise _fail(where, f"cannot read this entry (keys: {shapes}); expected a conv, BatchNorm, PReLU, Linear or "
                       "SE (fc1/fc2) entry")


def _sequential(state: Mapping[str, torch.Tensor], prefix: str, where: str, stride: int = 1,
                gaps: bool = False) -> nn.Sequential:
    """The Sequential under ``prefix`` with its original child names; ``stride`` goes on the last conv.
    ``gaps`` (output_layer): missing integer entries hold no weights, Flatten before the Linear, Dropout
    (identity in eval) elsewhere; in other Sequentials a gap is an unknown parameter-free module, an error."""
    children, modules = _children(state, prefix), OrderedDict()
    numbered = [int(c) for c in children if c.isdigit()]
    linear_at = None
    for child, keys in children.items():
        modules[child] = _entry(f"{where} {prefix}.{child}", keys, linear_at is not None)
        if isinstance(modules[child], nn.Linear):
            linear_at = int(child)
    missing = sorted(set(range(max(numbered, default=-1) + 1)) - set(numbered))
    if missing and not gaps:
        raise _fail(where, f"{prefix} has no keys for entr{'y' if len(missing) == 1 else 'ies'} {missing}: a "
                           "module without weights this reader does not know")
    if gaps:
        if linear_at is None or linear_at - 1 not in missing:
            raise _fail(where, f"{prefix} needs a Linear after a weight-free entry (Flatten), as "
                               "[BatchNorm2d, Dropout, Flatten, Linear, BatchNorm1d]")
        for index in missing:
            modules[str(index)] = nn.Flatten() if index == linear_at - 1 else nn.Dropout()
        modules = OrderedDict(sorted(modules.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 1e9))
    sequential = nn.Sequential(modules)
    if stride != 1:
        _last_conv(sequential, f"{where} {prefix}").stride = (stride, stride)
    return sequential


def _last_conv(sequential: nn.Sequential, where: str) -> nn.Conv2d:
    convs = [m for m in sequential if isinstance(m, nn.Conv2d)]
    if not convs:
        raise _fail(where, "no conv in this Sequential")
    return convs[-1]


def build_from_state_dict(state: Mapping[str, torch.Tensor], input_size: int, where: str = "evolve_ir",
                          normalise: nn.Module | None = None) -> EvolveIR:
    """An :class:`EvolveIR` in eval mode, frozen, with ``state`` loaded strictly (a missing
    ``num_batches_tracked`` of an old checkpoint reads as 0); ``normalise`` maps RGB 0..255 to its input."""
    state = dict(state)
    input_layer = _sequential(state, "input_layer", where)
    blocks, channels, halvings = [], _last_conv(input_layer, f"{where} input_layer").out_channels, 0
    indices = list(_children(state, "body"))
    if indices != [str(k) for k in range(len(indices))]:
        raise _fail(where, f"body entries are {indices[:5]}..., expected body.0, body.1, ... (numbered blocks)")
    for k in indices:
        prefix = f"body.{k}"
        parts = set(_children(state, prefix))
        if not parts <= {"shortcut_layer", "res_layer"} or "res_layer" not in parts:
            raise _fail(where, f"{prefix} has {sorted(parts)}, expected res_layer (and shortcut_layer)")
        res_layer = _sequential(state, f"{prefix}.res_layer", where)
        last = _last_conv(res_layer, f"{where} {prefix}.res_layer")
        stride = 2 if k == "0" or last.out_channels != channels else 1
        last.stride, halvings, channels = (stride, stride), halvings + (stride == 2), last.out_channels
        shortcut = (_sequential(state, f"{prefix}.shortcut_layer", where, stride) if "shortcut_layer" in parts
                    else nn.MaxPool2d(1, stride))
        blocks.append(IRBlock(shortcut, res_layer, stride))
    output_layer = _sequential(state, "output_layer", where, gaps=True)
    linear = next(m for m in output_layer if isinstance(m, nn.Linear))
    side = round((linear.in_features / channels) ** 0.5)
    if side * side * channels != linear.in_features or side * 2 ** halvings != input_size:
        raise _fail(where, f"output_layer's Linear takes {linear.in_features} = {channels} x h x w features after "
                           f"{halvings} stride-2 stages, which does not fit input_size {input_size} "
                           f"(a {side * 2 ** halvings}-pixel input would give {side}x{side})")
    model = EvolveIR(input_layer, nn.Sequential(*blocks), output_layer)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # built from these keys, so only a shape the rules misread lands here
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise _fail(where, f"the state dict does not load into the network read from it ({lines[-1][:160]})") from None
    if normalise is not None:
        model.normalise = normalise
    return model.eval().requires_grad_(False)


def load_evolve_ir(path: Path, input_size: int, where: str = "evolve_ir",
                   normalise: nn.Module | None = None) -> EvolveIR:
    """:func:`read_state_dict` + :func:`build_from_state_dict` (the sha256 is checked by the caller first)."""
    return build_from_state_dict(read_state_dict(path, where), input_size, where, normalise)


def stage_layers(model: EvolveIR) -> list[str]:
    """``input_layer`` and each stage's last block ``body.<k>`` (the block before a stride-2 one, and the
    last), shallow to deep: the default LEAM layers, one per resolution (module docstring)."""
    strides = [block.stride for block in model.body] + [2]
    return ["input_layer"] + [f"body.{k}" for k in range(len(model.body)) if strides[k + 1] == 2]
