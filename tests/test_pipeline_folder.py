"""End to end with a folder source: `dvc repro` accounts for every photo, and a new photo reruns the pipeline.

A scratch git + DVC copy of the repository (as in tests/test_pipeline.py) reads ``data.source: folder``
from a small folder of mirror photos (4 identities x 3 photos, plus one identity with a single photo) with
one model, dlib_resnet. After `dvc repro`, every stage's inputs equal its kept plus discarded images; a
second `dvc status` shows only the always-changed `inputs` stage; then one photo is added to the folder:
`dvc repro align` must rerun `faces` and `align` (not `weights`) and take it in, and `dvc repro --dry` must
then name every stage that reads the aligned data. To stay near two minutes
the runs stop before the report, which tests/test_pipeline.py renders (its deps include metrics/data.json
and data/aligned/index.csv, which change here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.scratch import merge, run

pytestmark = pytest.mark.slow

NO_FACE = {"images/ben_affleck/opencv_course_train_7.jpg", "images/elton_john/opencv_course_train_12.jpg"}
IDENTITIES = ("andrew_lincoln", "ben_affleck", "elton_john", "jennifer_aniston")
SMALL_PARAMS = {
    "models": ["dlib_resnet"],
    "weights": {"human_models": {"enabled": False}},
    "parsing": {"backend": "landmarks"},  # no npm package in this scope: the parser that needs none
    "align": {"workers": 1},
    "occlusion": {"max_images_per_identity": 1, "thresholds": [0.05], "transfer": False},
    "similarity": {"bootstrap": 100, "workers": 1},
    "correlate": {"bootstrap": 100},
    "variability": {"bootstrap": 100},
    "report": {"renderer": "fallback"},
    "symmetry": {"max_images": 6, "bootstrap": 100},
}
TARGETS = ["plots", "variability", "models"]  # with their upstream stages: every stage but the report


def _project_files() -> list[str]:
    """Tracked files plus new files git does not ignore (so the test runs on an uncommitted working tree)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return [name for name in listed if name and (REPO_ROOT / name).is_file()
            and not name.startswith(("metrics/", "dvc.lock", "data/"))]


@pytest.fixture(scope="module")
def folder_repo(tmp_path_factory, mirror_manifest, faces_mirror) -> tuple[Path, Path, dict]:
    """(scratch repository after `dvc repro`, the photo folder, env)."""
    base = tmp_path_factory.mktemp("folder_pipeline")
    root, photos = base / "repo", base / "photos"
    for name in _project_files():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    usable = mirror_manifest[~mirror_manifest.file.isin(NO_FACE)].sort_values("file")
    picked = [*usable[usable.identity.isin(IDENTITIES)].groupby("identity").head(3).file,
              usable[usable.identity == "madonna"].file.iloc[0]]  # a single photo: too_few_images
    for file in picked:
        target = photos / Path(file).relative_to("images")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(faces_mirror / file, target)
    params = merge(yaml.safe_load((root / "params.yaml").read_text()), SMALL_PARAMS)
    params["data"].update({"source": "folder", "folder_root": str(photos)})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org")
    env.pop("LEAM_FACES_MIRROR", None)
    run(["git", "init", "-q"], root, env)
    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "scratch"], root, env)
    run(["dvc", "repro", *TARGETS], root, env)
    return root, photos, env


def test_every_stage_accounts_for_every_photo(folder_repo):
    root, photos, _ = folder_repo
    data = json.loads((root / "metrics/data.json").read_text())
    files = sum(1 for p in photos.rglob("*") if p.is_file())
    faces, align = data["steps"]["faces"], data["steps"]["align"]
    assert faces["inputs"] == files == 13 and faces["not_selected"] == 0
    assert faces["inputs"] == faces["kept"] + faces["discarded"] and faces["discarded"] == 1  # madonna
    assert align["inputs"] == faces["kept"] == align["kept"] + align["discarded"]
    assert data["images"] == data["kept"] + data["discarded"] and data["discarded_by_reason"]["too_few_images"] >= 1
    discards = pd.read_csv(root / "data/aligned/discards.csv", keep_default_na=False)
    assert len(discards) == faces["discarded"] + align["discarded"]

    aligned = pd.read_csv(root / "data/aligned/index.csv")
    assert len(aligned) == align["kept"]
    meta = pd.read_csv(root / "data/leam/dlib_resnet/meta.csv")
    dropped = pd.read_csv(root / "data/leam/dlib_resnet/discards.csv")
    layers = json.loads((root / "data/leam/dlib_resnet/layers.json").read_text())
    assert len(meta) + len(dropped) == len(aligned) == layers["images_in"]
    assert sorted([*meta.image_id, *dropped.image_id]) == sorted(aligned.image_id)
    parsed = pd.read_csv(root / "data/parsing/index.csv")
    parse_discards = pd.read_csv(root / "data/parsing/discards.csv")
    assert list(parsed.image_id) == list(aligned.image_id)
    assert int(parsed.parsed.sum()) + len(parse_discards) == len(aligned)


def test_a_new_photo_in_the_folder_reruns_faces_and_everything_after_it(folder_repo, faces_mirror):
    root, photos, env = folder_repo
    status = json.loads(run(["dvc", "status", "--json", "--with-deps", *TARGETS], root, env).strip().splitlines()[-1])
    assert status == {"inputs": ["always changed"]}, status
    before = json.loads((root / "metrics/data.json").read_text())

    identity = IDENTITIES[0]
    present = {p.name for p in (photos / identity).iterdir()}
    extra = next(p for p in sorted((faces_mirror / "images" / identity).iterdir()) if p.name not in present)
    shutil.copyfile(extra, photos / identity / extra.name)
    # faces and align really run and take the photo in; DVC's dry run then names the stages that read the
    # aligned data (running them again would only repeat the first repro: each one's outputs follow its inputs)
    out = run(["dvc", "repro", "align"], root, env)
    assert "Running stage 'faces'" in out and "Running stage 'align'" in out, out[-3000:]
    assert "Running stage 'weights'" not in out
    assert f"{identity}/{extra.stem}" in set(pd.read_csv(root / "data/aligned/index.csv").image_id)
    dry = run(["dvc", "repro", "--dry", *TARGETS], root, env)
    readers = ("models", "leam@dlib_resnet", "parse", "occlusion")  # the stages with data/aligned among their deps
    assert all(f"Running stage '{stage}'" in dry for stage in readers), dry[-3000:]
    assert "Running stage 'weights'" not in dry and "Running stage 'align'" not in dry
    after = json.loads((root / "metrics/data.json").read_text())
    assert after["steps"]["faces"]["inputs"] == before["steps"]["faces"]["inputs"] + 1
