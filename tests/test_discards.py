"""Nothing leaves the pipeline silently: every photo is kept or a discard with a reason, and counts add up.

Real photos from the mirror in a folder source (faces stage), then the real align stage on them; tiny
tables for the accounting helpers; the inputs fingerprint that makes DVC rerun `faces` on a new photo.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from leam.cli import run_stage
from leam.data import collect_faces, write_outputs
from leam.data.fetch import FetchSettings
from leam.data.manifest import select_accounted
from leam.data.sources import _read_labels
from leam.errors import LeamError
from leam.inputs import source_fingerprint, stage_inputs
from stages import align as align_stage

REPO_ROOT = Path(__file__).resolve().parents[1]

# photos of the mirror and what the align stage makes of them (dlib HOG, repository params)
NO_FACE = ("ben_affleck/opencv_course_train_7.jpg", "elton_john/opencv_course_train_12.jpg",
           "elton_john/opencv_course_train_7.jpg")
FACES = ("ben_affleck/opencv_course_train_1.jpg", "ben_affleck/opencv_course_train_10.jpg",
         "ben_affleck/opencv_course_train_11.jpg", "elton_john/opencv_course_train_1.jpg",
         "andrew_lincoln/opencv4nodejs_rick1.jpg", "andrew_lincoln/opencv4nodejs_rick2.jpg",
         "madonna/opencv_course_train_1.jpg")


def _params(root: Path, **data) -> dict:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"].update({"source": "folder", "folder_root": str(root), **data})
    params["align"]["workers"] = 1
    return params


@pytest.fixture
def folder(tmp_path, faces_mirror, monkeypatch) -> Path:
    """A folder source with one case of every way a photo or identity can leave the faces stage."""
    root = tmp_path / "photos"
    for name in (*NO_FACE, *FACES):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(faces_mirror / "images" / name, target)
    lincoln = root / "andrew_lincoln"
    shutil.copyfile(lincoln / "opencv4nodejs_rick1.jpg", lincoln / "opencv4nodejs_rick1.png")  # duplicate_id
    (lincoln / "notes.txt").write_text("not a photo\n")                                         # unsupported_type
    (lincoln / "more").mkdir()                                                                # nested_folder
    shutil.copyfile(lincoln / "opencv4nodejs_rick2.jpg", root / "stray.jpg")                   # no_identity_folder
    (root / "locked").mkdir()                                                                 # unreadable_folder
    (root / ".hidden").mkdir()                                                                # not an input
    (root / "labels.csv").write_text("identity,gender\nben_affleck,male\nelton_john,male\nmadonna,female\n"
                                     "andrew_lincoln,male\nben_affleck,male\n")  # a repeated row that agrees is fine
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.name == "locked":  # tests run as root, for whom chmod 000 changes nothing
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    return root


def test_every_photo_of_a_folder_source_is_kept_or_a_discard_through_align(folder, tmp_path, monkeypatch):
    params = _params(folder)
    result = collect_faces(params, tmp_path / "data/faces", root=tmp_path, progress=False)
    write_outputs(result, tmp_path / "data/faces")
    summary, discards = result.summary, result.discards
    reasons = dict(zip(discards.image_id, discards.reason))
    assert reasons == {"madonna/opencv_course_train_1": "too_few_images",     # a single photo: no reference
                       "andrew_lincoln/opencv4nodejs_rick1": "duplicate_id",
                       "andrew_lincoln/notes.txt": "unsupported_type",
                       "andrew_lincoln/more/*": "nested_folder",
                       "": "no_identity_folder",
                       "locked/*": "unreadable_folder"}
    assert summary["inputs"] == 15 == summary["images"] + summary["discarded"] + summary["not_selected"]
    assert summary["images"] == 9 and summary["not_selected"] == 0

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)  # index paths are relative to the repository root, here tmp_path
    argv = ["--params", "params.yaml", "--out", "aligned", "--metrics", "data.json", "--examples", "0"]
    assert run_stage("align", align_stage.main, align_stage.build_parser(), argv) == 0

    kept = pd.read_csv(tmp_path / "aligned/index.csv")
    aligned_discards = pd.read_csv(tmp_path / "aligned/discards.csv", keep_default_na=False)
    ours = aligned_discards[aligned_discards.stage == "align"]
    assert dict(zip(ours.image_id, ours.reason)) == {
        "ben_affleck/opencv_course_train_7": "no_face", "elton_john/opencv_course_train_12": "no_face",
        "elton_john/opencv_course_train_7": "no_face",
        "elton_john/opencv_course_train_1": "too_few_images"}   # its only photo with a face: no reference
    assert sorted(kept.identity.unique()) == ["andrew_lincoln", "ben_affleck"]
    assert set(kept.image_id) | set(ours.image_id) == set(result.index.image_id)  # align inputs = faces kept
    assert len(aligned_discards) == len(ours) + len(discards)                   # the faces discards travel on

    metrics = json.loads((tmp_path / "data.json").read_text())
    faces_step, align_step = metrics["steps"]["faces"], metrics["steps"]["align"]
    assert faces_step == {"inputs": 15, "kept": 9, "discarded": 6, "not_selected": 0}
    assert align_step == {"inputs": 9, "kept": 5, "discarded": 4}
    assert metrics["inputs"] == 15 and metrics["images"] == metrics["kept"] + metrics["discarded"] == 15
    assert metrics["discarded_by_reason"]["too_few_images"] == 2
    assert metrics["identities"] == 5  # ben, elton, madonna, lincoln, locked: the stray file belongs to none
    assert sum(g["images"] for g in metrics["by_gender"].values()) == metrics["images"]


def test_caps_are_counted_not_discarded(folder, tmp_path):
    result = collect_faces(_params(folder, max_identities=1), tmp_path / "faces", root=tmp_path, progress=False)
    summary = result.summary
    assert summary["identities"] == 1 and summary["not_selected"] > 0
    assert summary["inputs"] == 15 == summary["images"] + summary["discarded"] + summary["not_selected"]


@pytest.mark.parametrize("where", ["folder", "imdb"])
def test_conflicting_genders_in_a_labels_file_name_both_lines(folder, tmp_path, where):
    text = "identity,gender\nmadonna,female\nben_affleck,male\nmadonna,male\n"
    if where == "folder":
        (folder / "labels.csv").write_text(text)
        with pytest.raises(LeamError) as error:
            collect_faces(_params(folder), tmp_path / "faces", root=tmp_path, progress=False)
    else:  # the imdb_face source reads data.labels_csv with the same reader
        (tmp_path / "labels.csv").write_text(text)
        with pytest.raises(LeamError) as error:
            _read_labels(tmp_path / "labels.csv", FetchSettings())
    message = str(error.value)
    assert "\n" not in message and "'madonna'" in message and "line 2" in message and "line 4" in message


def test_select_accounted_adds_up_and_refuses_a_cap_below_the_minimum():
    rows = pd.DataFrame({"identity": list("aaabbc"), "image_id": [f"{i}/{n}" for n, i in enumerate("aaabbc")],
                         "path": [f"p{n}" for n in range(6)]})
    chosen, discards, not_selected = select_accounted(rows, 0, max_images_per_identity=2, min_images_per_identity=2,
                                                      path_column="path")
    assert [d["image_id"] for d in discards] == ["c/5"] and discards[0]["path"] == "p5"
    assert len(chosen) == 4 and not_selected == 1 and len(chosen) + len(discards) + not_selected == len(rows)
    with pytest.raises(LeamError, match="max_images_per_identity=1 is below"):
        select_accounted(rows, 0, max_images_per_identity=1, min_images_per_identity=2)


def test_fingerprint_changes_when_a_photo_is_added_and_only_then(folder, faces_mirror):
    data = _params(folder)["data"]
    before = source_fingerprint(data)
    assert source_fingerprint(data) == before
    photos = before["inputs"][0]["photos"]
    assert "ben_affleck/opencv_course_train_1.jpg" in photos and len(photos) == 10
    assert ["locked", "unreadable_folder"] in before["inputs"][0]["other"]
    shutil.copyfile(faces_mirror / "images/ben_affleck/opencv_course_train_2.jpg",
                    folder / "ben_affleck/opencv_course_train_2.jpg")
    after = source_fingerprint(data)
    assert set(after["inputs"][0]["photos"]) - set(photos) == {"ben_affleck/opencv_course_train_2.jpg"}


def test_stage_inputs_fingerprint_only_the_files_in_use(tmp_path):
    from leam.config import validate_params

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_id,reference_image_id\n")
    raw["leam"]["pairs_file"] = str(pairs)
    unused = stage_inputs(validate_params(raw))
    assert unused["leam"] == {"inputs": []} and unused["parse"] == {"inputs": []}
    assert unused["faces"]["inputs"][0]["role"] == "manifest" and unused["faces"]["inputs"][0]["sha256"]
    raw["leam"]["reference"] = "pairs"
    used = stage_inputs(validate_params(raw))["leam"]["inputs"]
    assert len(used) == 1 and used[0]["path"] == str(pairs) and len(used[0]["sha256"]) == 64
