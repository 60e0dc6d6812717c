"""End to end: the real `dvc repro` on a small slice of the sample, in a scratch copy of the repository.

This is the integration check behind the README's `make repro`: every stage runs on real faces with real
models, a second `dvc repro` does nothing, `dvc exp run -S threshold=...` reruns only the threshold-dependent
stages and changes the headline metrics, and the rendered report shows the metrics' numbers.
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

SMALL_PARAMS = {
    "data": {"max_identities": 4, "max_images_per_identity": 3},
    "models": ["dlib_resnet", "mobileface"],
    "occlusion": {"max_images_per_identity": 1, "thresholds": [0.05]},
    "similarity": {"bootstrap": 200},
    "correlate": {"bootstrap": 200},
    "variability": {"bootstrap": 200},
    "align": {"workers": 1},
    "symmetry": {"max_images": 6, "bootstrap": 100},
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


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory, faces_mirror) -> tuple[Path, dict]:
    """A copy of the tracked files with small params, as its own git + DVC repository, after `dvc repro`."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        source = REPO_ROOT / name
        if source.is_file() and not name.startswith(("metrics/", "dvc.lock")):
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    params = merge(yaml.safe_load((root / "params.yaml").read_text()), SMALL_PARAMS)
    npm_cache = REPO_ROOT / ".cache" / "npm"
    params["weights"]["human_models"]["cache"] = str(npm_cache)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, LEAM_FACES_MIRROR=str(faces_mirror), DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org")
    run(["git", "init", "-q"], root, env)
    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "scratch"], root, env)
    run(["dvc", "repro"], root, env)
    return root, env


def test_repro_runs_every_stage_on_real_faces(scratch_repo):
    root, _ = scratch_repo
    data = json.loads((root / "metrics/data.json").read_text())
    assert data["images"] == 12 and data["kept"] + data["discarded"] == 12
    models = json.loads((root / "metrics/models.json").read_text())
    assert set(SMALL_PARAMS["models"]) <= set(json.dumps(models).replace('"', " ").split())
    for name in ("correlation", "similarity", "variability", "occlusion", "protect"):
        assert (root / f"metrics/{name}.json").is_file(), name
    for model in SMALL_PARAMS["models"]:
        layers = json.loads((root / f"data/leam/{model}/layers.json").read_text())
        assert layers["layers"][-1] == "overall"
    assert (root / "reports/_site/index.html").is_file()


def test_second_repro_does_nothing_and_layer_change_reruns_only_leam_downstream(scratch_repo):
    root, env = scratch_repo
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
    root, env = scratch_repo
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

    root, _ = scratch_repo
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

    root, _ = scratch_repo
    differences = largest_differences(root)  # every saved PNG of every condition, read back from disk
    assert set(differences) == {"dlib_resnet", "mobileface"}, differences
    rotated = pd.read_csv(root / "data/protect/leave_one_out.csv")    # each network once left out, and re-embedded above
    assert sorted(rotated.network.unique()) == ["dlib_resnet", "mobileface"] and set(rotated.role) == {"left_out"}
    assert "left_out" in json.loads((root / "metrics/protect.json").read_text())["leave_one_out"]["networks"]
    assert max(differences.values()) < 1e-4, differences
