"""Read TensorFlow.js graph models: ``model.json`` (the graph) and its ``.bin`` shards (the weights).

Only the file format lives here; :mod:`leam.models.tfjs_import` turns the parsed graph into a
:class:`leam.models.graph.GraphModule`. Weights stored as float16, or as uint8/uint16 codes with a scale and
minimum, are dequantised to float32 on reading.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from leam.errors import LeamError

__all__ = ["attr", "inline_const", "input_name", "load_graph_json", "read_weights"]

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_TF_DTYPES = {"DT_FLOAT": "float32", "DT_INT32": "int32", "DT_BOOL": "bool"}


# ----------------------------------------------------------------------------------------------------
# reading the files


def read_weights(manifest: list[dict], folder: Path) -> dict[str, np.ndarray]:
    """Decode a TF.js ``weightsManifest`` into numpy arrays (float32/int32), dequantising where needed.

    Each manifest group's shards are concatenated and its weights read in order. Quantised weights store
    ``float16`` values, or ``uint8``/``uint16`` codes with ``scale`` and ``min`` (value = code*scale+min).
    """
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        chunks = []
        for shard in group["paths"]:
            path = folder / shard
            if not path.is_file():
                raise LeamError(f"TF.js weight shard missing: {path}")
            chunks.append(path.read_bytes())
        buffer = b"".join(chunks)
        offset = 0
        for entry in group["weights"]:
            shape = [int(s) for s in entry["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            if quant:
                stored = _QUANT_DTYPES.get(quant["dtype"])
                if stored is None:
                    raise LeamError(f"unsupported TF.js quantisation {quant['dtype']!r} for weight {entry['name']!r}")
                raw = np.frombuffer(buffer, dtype=stored, count=count, offset=offset)
                offset += raw.nbytes
                if quant["dtype"] == "float16":
                    values = raw.astype(np.float32)
                else:
                    values = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                values = values.astype(_DTYPES[entry["dtype"]])
            else:
                dtype = _DTYPES.get(entry["dtype"])
                if dtype is None:
                    raise LeamError(f"unsupported TF.js weight dtype {entry['dtype']!r} for {entry['name']!r}")
                values = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
                offset += values.nbytes
            if offset > len(buffer):
                raise LeamError(f"TF.js weight shards of {folder} are shorter than the manifest says")
            weights[entry["name"]] = values.reshape(shape).copy()
    return weights


def load_graph_json(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read ``model.json`` and its shards: (parsed JSON, {constant name: array})."""
    path = Path(path)
    if not path.is_file():
        raise LeamError(f"TF.js model file not found: {path}")
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
        nodes = model["modelTopology"]["node"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LeamError(f"{path} is not a TF.js graph model ({type(exc).__name__}: {exc})") from None
    if model.get("format") not in (None, "graph-model"):
        raise LeamError(f"{path} has format {model.get('format')!r}; only TF.js graph models are supported")
    del nodes
    return model, read_weights(model.get("weightsManifest", []), path.parent)


# ----------------------------------------------------------------------------------------------------
# node attributes


def attr(node: dict, key: str, default: Any = None) -> Any:
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "list" in value:
        items = value["list"]
        if "i" in items:
            return [int(v) for v in items["i"]]
        if "s" in items:
            return [base64.b64decode(v).decode() for v in items["s"]]
        if "f" in items:
            return [float(v) for v in items["f"]]
        return []
    if "type" in value:
        return value["type"]
    return default


def input_name(ref: str) -> str | None:
    """Strip ``:N`` output suffixes; control inputs (``^name``) carry no data and return None."""
    if ref.startswith("^"):
        return None
    return re.sub(r":\d+$", "", ref)


def inline_const(node: dict) -> np.ndarray | None:
    """Small constants the converter left in the JSON (``attr.value.tensor``) instead of the shards."""
    tensor = node.get("attr", {}).get("value", {}).get("tensor")
    if not tensor:
        return None
    dtype = _TF_DTYPES.get(tensor.get("dtype", "DT_FLOAT"), "float32")
    shape = [int(d.get("size", 0)) for d in tensor.get("tensorShape", {}).get("dim", [])]
    for key in ("floatVal", "intVal", "boolVal"):
        if key in tensor:
            values = np.asarray(tensor[key], dtype=_DTYPES[dtype])
            count = int(np.prod(shape)) if shape else 1
            return np.broadcast_to(values, (count,)).reshape(shape).copy() if values.size == 1 else values.reshape(shape)
    return None
