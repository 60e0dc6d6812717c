"""End to end: the real `dvc repro` on a small folder of real photos, in a scratch copy of the repository.

This is the integration check behind the README's `make repro`. One scratch git + DVC repository reads
``data.source: folder`` from 13 mirror photos (4 identities x 3, plus one identity with a single photo,
which must be discarded as too few) with two real models: every stage runs and accounts for every photo,
a second `dvc repro` does nothing, a layer change reruns only LEAM and what follows, the rendered report
shows the metrics' numbers, the protected PNGs re-embed to the reported cosines, `dvc exp run -S
threshold=...` reruns only the threshold-dependent stages and changes the headline metrics, and, last
(it changes the folder), a new photo reruns `faces`, `align` and every stage that reads the aligned data.
One repository serves them all: the `dvc repro` is most of the suite's end-to-end time.
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

from tests.browser import chromium_paths
from tests.conftest import REPO_ROOT
from tests.scratch import merge, run

pytestmark = pytest.mark.slow

NO_FACE = {"images/ben_affleck/opencv_course_train_7.jpg", "images/elton_john/opencv_course_train_12.jpg"}
IDENTITIES = ("andrew_lincoln", "ben_affleck", "elton_john", "jennifer_aniston")
SMALL_PARAMS = {
    "models": ["dlib_resnet", "mobileface"],
    "occlusion": {"max_images_per_identity": 1, "thresholds": [0.05]},
    "similarity": {"bootstrap": 200},
    "correlate": {"bootstrap": 200},
    "variability": {"bootstrap": 200},
    "align": {"workers": 1},
    "symmetry": {"max_images": 2, "control_images": 2, "bootstrap": 100},
    # the explain stage end to end on a small scope (its methods and curves have their own tests)
    "explain": {"max_identities": 2, "methods": ["leam", "leam_opposes", "saliency", "random_face"],
                "maps": ["overall"], "fractions": [0.05, 0.5], "targets": [], "bootstrap": 100},
    # the protect stage end to end on a tiny scope (12 photos give 54 different-identity pairs: FAR 5%)
    "protect": {"sources": ["dlib_resnet"], "held_out": ["mobileface"], "maps": ["overall"], "budgets": [],
                "epsilons": [], "fills": ["black"], "random": ["face"], "sparse": False, "max_identities": 2,
                "steps": 2, "far": 0.05, "examples": 1, "bootstrap": 100, "leave_one_out": True},
}


THRESHOLD_STAGES = ("correlate", "similarity", "occlusion")
"""Stages whose outputs the top-level ``threshold`` changes directly (``variability``, ``symmetry`` and
``plots`` read it too; tests/test_dvc_deps.py checks every stage's params)."""


def _project_files() -> list[str]:
    """Tracked files plus new files git does not ignore (so the test runs on an uncommitted working tree)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return [name for name in listed if name and (REPO_ROOT / name).is_file()
            and not name.startswith(("metrics/", "dvc.lock", "data/"))]


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory, mirror_manifest, faces_mirror) -> tuple[Path, dict, Path]:
    """(scratch repository after `dvc repro`, env, the photo folder it reads)."""
    base = tmp_path_factory.mktemp("pipeline")
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
    params["weights"]["human_models"]["cache"] = str(REPO_ROOT / ".cache" / "npm")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org")
    env.pop("LEAM_FACES_MIRROR", None)  # the folder is the only source of photos
    run(["git", "init", "-q"], root, env)
    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "scratch"], root, env)
    run(["dvc", "repro"], root, env)
    return root, env, photos


def test_repro_runs_every_stage_on_real_faces(scratch_repo):
    root, _, _ = scratch_repo
    data = json.loads((root / "metrics/data.json").read_text())
    assert data["images"] == 13 and data["kept"] + data["discarded"] == 13
    models = json.loads((root / "metrics/models.json").read_text())
    assert set(SMALL_PARAMS["models"]) <= set(json.dumps(models).replace('"', " ").split())
    for name in ("correlation", "similarity", "variability", "occlusion", "protect"):
        assert (root / f"metrics/{name}.json").is_file(), name
    for model in SMALL_PARAMS["models"]:
        layers = json.loads((root / f"data/leam/{model}/layers.json").read_text())
        assert layers["layers"][-1] == "overall"
    assert (root / "reports/_site/index.html").is_file()


def test_every_stage_accounts_for_every_photo(scratch_repo):
    root, _, photos = scratch_repo
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
    for model in SMALL_PARAMS["models"]:
        meta = pd.read_csv(root / f"data/leam/{model}/meta.csv")
        dropped = pd.read_csv(root / f"data/leam/{model}/discards.csv")
        layers = json.loads((root / f"data/leam/{model}/layers.json").read_text())
        assert len(meta) + len(dropped) == len(aligned) == layers["images_in"], model
        assert sorted([*meta.image_id, *dropped.image_id]) == sorted(aligned.image_id), model
    parsed = pd.read_csv(root / "data/parsing/index.csv")
    parse_discards = pd.read_csv(root / "data/parsing/discards.csv")
    assert list(parsed.image_id) == list(aligned.image_id)
    assert int(parsed.parsed.sum()) + len(parse_discards) == len(aligned)


def test_second_repro_does_nothing_and_layer_change_reruns_only_leam_downstream(scratch_repo):
    root, env, _ = scratch_repo
    status = json.loads(run(["dvc", "status", "--json"], root, env).strip().splitlines()[-1])
    assert status == {"inputs": ["always changed"]}, status  # it fingerprints param-named files on every repro
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["leam"]["layers"] = {"dlib_resnet": ["stem", "layer3.0"]}
    original = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(run(["dvc", "status", "--json"], root, env).strip().splitlines()[-1])
    finally:
        (root / "params.yaml").write_text(original)
    changed = set(status)
    assert "leam@dlib_resnet" in changed
    assert not changed & {"faces", "align", "weights", "models", "parse"}, changed


def test_experiment_with_threshold_changes_headline_and_reruns_only_downstream(scratch_repo):
    root, env, _ = scratch_repo
    before = json.loads((root / "metrics/correlation.json").read_text())
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "after repro"], root, env)
    # the threshold's direct consumers (variability, plots and the report follow them and are covered by
    # the first repro and tests/test_report_pages.py)
    out = run(["dvc", "exp", "run", "-S", "threshold=0.05", *THRESHOLD_STAGES], root, env)
    for stage in ("faces", "align", "weights", "parse", "leam@dlib_resnet"):  # upstream of the targets
        assert f"Stage '{stage}' didn't change" in out or f"'{stage}' didn't change" in out, (stage, out[-2000:])
    assert "Running stage 'models'" not in out
    for stage in THRESHOLD_STAGES:
        assert f"Running stage '{stage}'" in out, (stage, out[-2000:])
    after = json.loads((root / "metrics/correlation.json").read_text())
    assert after != before
    shown = run(["dvc", "exp", "show", "--no-pager", "--json"], root, env)
    assert "0.05" in shown and "correlation.json" in shown


@pytest.mark.skipif(None in chromium_paths(), reason="needs Debian's chromium and chromium-driver (make test installs them)")
def test_rendered_report_shows_the_pipeline_metrics_in_chromium(scratch_repo, tmp_path):
    from tests.browser import check_page

    root, _, _ = scratch_repo
    models = json.loads((root / "metrics/models.json").read_text())
    index_html = root / "reports/_site/index.html"
    text = index_html.read_text()
    for model in SMALL_PARAMS["models"]:
        assert f"{models[model]['auc_cosine']:.4f}" in text, model
    for page in ("index", "occlusion"):
        check = check_page(root / f"reports/_site/{page}.html", tmp_path / f"{page}.png")
        assert check.tables > 0 and not check.broken_images and not check.console_errors, (page, check)


def test_protected_pngs_reembed_to_the_reported_cosines(scratch_repo):
    from tools.check_protect import largest_differences

    root, _, _ = scratch_repo
    differences = largest_differences(root)  # every saved PNG of every condition, read back from disk
    assert set(differences) == {"dlib_resnet", "mobileface"}, differences
    rotated = pd.read_csv(root / "data/protect/leave_one_out.csv")    # each network once left out, and re-embedded above
    assert sorted(rotated.network.unique()) == ["dlib_resnet", "mobileface"] and set(rotated.role) == {"left_out"}
    assert "left_out" in json.loads((root / "metrics/protect.json").read_text())["leave_one_out"]["networks"]
    assert max(differences.values()) < 1e-4, differences


def test_a_new_photo_in_the_folder_reruns_faces_and_everything_after_it(scratch_repo, faces_mirror):
    """Last in the module: it adds a photo to the folder the scratch repository reads."""
    root, env, photos = scratch_repo
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
    dry = run(["dvc", "repro", "--dry"], root, env)
    readers = ("models", *(f"leam@{model}" for model in SMALL_PARAMS["models"]), "parse", "occlusion", "symmetry")
    assert all(f"Running stage '{stage}'" in dry for stage in readers), dry[-3000:]
    assert "Running stage 'weights'" not in dry and "Running stage 'align'" not in dry
    after = json.loads((root / "metrics/data.json").read_text())
    assert after["steps"]["faces"]["inputs"] == before["steps"]["faces"]["inputs"] + 1
