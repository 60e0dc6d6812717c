"""TensorFlow.js in node (``tools/tfjs_reference``) as the reference runtime of the TF.js graph tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parents[1] / "tools" / "tfjs_reference"


def tfjs_ready() -> bool:
    """node and @tensorflow/tfjs (+ the wasm backend) are there, installed with ``npm ci`` when npm is."""
    if shutil.which("node") is None:
        return False
    modules = REFERENCE / "node_modules" / "@tensorflow"
    if not (modules / "tfjs-backend-wasm").is_dir() and shutil.which("npm"):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=REFERENCE, capture_output=True, timeout=600)
    return (modules / "tfjs").is_dir() and (modules / "tfjs-backend-wasm").is_dir()


def run_tfjs(model_json: Path, graph_input: np.ndarray, outputs: list[str], folder: Path) -> dict[str, np.ndarray]:
    """TF.js values of ``outputs`` (TF layout, NHWC) for a float32 NHWC ``graph_input``."""
    data = np.ascontiguousarray(graph_input, dtype="<f4")
    data.tofile(folder / "x.f32")
    subprocess.run(["node", str(REFERENCE / "run_graph.js"), "--model", str(model_json), "--input", str(folder / "x.f32"),
                    "--shape", ",".join(map(str, data.shape)), "--outputs", ",".join(outputs),
                    "--out", str(folder / "out.json")], check=True, capture_output=True, timeout=300)
    result = json.loads((folder / "out.json").read_text())["outputs"]
    return {name: np.asarray(result[name]["data"], np.float32).reshape(result[name]["shape"]) for name in outputs}
