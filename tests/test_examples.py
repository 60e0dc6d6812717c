"""leam.examples: a deterministic choice of example images and one writer that leaves no stale PNG."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from leam.examples import first_per_identity, write_examples


def test_first_per_identity_takes_the_first_row_of_the_first_identities():
    index = pd.DataFrame({"image_id": ["a/2", "a/1", "b/1", "c/1", "c/2"], "identity": ["a", "a", "b", "c", "c"],
                          "row": [4, 3, 2, 1, 0]})
    assert first_per_identity(index, 2).image_id.tolist() == ["a/2", "b/1"]
    assert first_per_identity(index, 10).row.tolist() == [4, 2, 1]
    assert first_per_identity(index, 0).empty


def test_write_examples_replaces_the_folder_contents(tmp_path):
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "old__1.png").write_bytes(b"stale")
    (folder / "notes.txt").write_text("kept")
    image = np.zeros((4, 6, 3), np.uint8)
    image[1, 2] = (255, 0, 0)  # red in RGB
    written = write_examples(folder, [("ann/1", image), ("bob/x", image + 1)])
    assert [p.name for p in written] == ["ann__1.png", "bob__x.png"]
    assert sorted(p.name for p in folder.iterdir()) == ["ann__1.png", "bob__x.png", "notes.txt"]
    assert cv2.imread(str(folder / "ann__1.png"))[1, 2].tolist() == [0, 0, 255]  # OpenCV reads BGR
    assert write_examples(tmp_path / "new" / "examples", iter(())) == [] and (tmp_path / "new" / "examples").is_dir()
