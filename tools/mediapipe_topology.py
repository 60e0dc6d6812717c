"""Write ``leam/parsing/face_mesh_topology.json``: MediaPipe's published face-mesh index lists, read from its wheel.

The ``mesh`` parser (``leam.parsing.mesh``) rasterises regions of the 468-point face mesh. Which mesh vertices
bound which region is MediaPipe's canonical face-mesh topology (Apache-2.0), published in its PyPI package:

* ``mediapipe/python/solutions/face_mesh_connections.py``: ``FACEMESH_LIPS``, ``_LEFT_EYE``, ``_RIGHT_EYE``,
  ``_LEFT_EYEBROW``, ``_RIGHT_EYEBROW``, ``_FACE_OVAL``, ``_NOSE`` (edge sets);
* ``mediapipe/tasks/python/vision/face_landmarker.py``: ``FaceLandmarksConnections.FACE_LANDMARKS_TESSELATION``,
  the triangulation written as three edges per triangle, in order (the solutions file keeps it as an
  unordered edge set, which loses the triangles).

The lists are read from the files' syntax trees (literals only; nothing is executed) and written with the
wheel's name and each file's sha256. Run once per MediaPipe version:

  pip download --no-deps --only-binary=:all: mediapipe==0.10.21 -d /tmp/mp
  python -m tools.mediapipe_topology /tmp/mp/mediapipe-0.10.21-*.whl
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import zipfile
from pathlib import Path

SOLUTIONS = "mediapipe/python/solutions/face_mesh_connections.py"
TASKS = "mediapipe/tasks/python/vision/face_landmarker.py"
REGIONS = ("FACEMESH_LIPS", "FACEMESH_LEFT_EYE", "FACEMESH_RIGHT_EYE", "FACEMESH_LEFT_EYEBROW",
           "FACEMESH_RIGHT_EYEBROW", "FACEMESH_FACE_OVAL", "FACEMESH_NOSE")
OUT = Path(__file__).resolve().parents[1] / "leam" / "parsing" / "face_mesh_topology.json"


def _edge_sets(source: str) -> dict[str, list[list[int]]]:
    """``NAME = frozenset([(a, b), ...])`` assignments of the solutions file, sorted edges."""
    found = {}
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in REGIONS and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "frozenset" and node.value.args):
            found[node.targets[0].id] = sorted([int(a), int(b)] for a, b in ast.literal_eval(node.value.args[0]))
    missing = [name for name in REGIONS if name not in found]
    if missing:
        raise SystemExit(f"{SOLUTIONS} has no {', '.join(missing)}")
    return found


def _triangles(source: str) -> list[list[int]]:
    """``FACE_LANDMARKS_TESSELATION: List[Connection] = [Connection(a, b), ...]`` as triangles (3 edges each)."""
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id == "FACE_LANDMARKS_TESSELATION"):
            edges = [(ast.literal_eval(call.args[0]), ast.literal_eval(call.args[1])) for call in node.value.elts]
            break
    else:
        raise SystemExit(f"{TASKS} has no FACE_LANDMARKS_TESSELATION")
    triangles = []
    for k in range(0, len(edges), 3):
        (a, b), (b2, c), (c2, a2) = edges[k:k + 3]
        if (b, c, a) != (b2, c2, a2):
            raise SystemExit(f"tesselation edges {k}..{k + 2} do not close a triangle: {edges[k:k + 3]}")
        triangles.append([a, b, c])
    return triangles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", help="a mediapipe wheel (pip download mediapipe)")
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as wheel:
        solutions, tasks = wheel.read(SOLUTIONS), wheel.read(TASKS)
    document = {
        "source": {"package": Path(args.wheel).name, "license": "Apache-2.0 (The MediaPipe Authors)",
                   "files": {SOLUTIONS: hashlib.sha256(solutions).hexdigest(),
                             TASKS: hashlib.sha256(tasks).hexdigest()},
                   "written_by": "python -m tools.mediapipe_topology"},
        "regions": {name.removeprefix("FACEMESH_").lower(): edges
                    for name, edges in _edge_sets(solutions.decode()).items()},
        "triangles": _triangles(tasks.decode()),
    }
    OUT.write_text(json.dumps(document, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}: {len(document['triangles'])} triangles, regions {', '.join(document['regions'])}")


if __name__ == "__main__":
    main()
