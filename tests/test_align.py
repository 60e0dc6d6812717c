"""leam.align on real sample photos: exact dlib chip geometry, level eyes, policies, discards, the stage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import dlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leam.align import (
    AlignConfig,
    FaceAligner,
    align_images,
    chip_to_image_matrix,
    image_to_frame_matrix,
    warp_to_frame,
)
from leam.cli import run_stage
from leam.errors import LeamError
from leam.frame import invert_affine, transform_points
from leam.imageio import ImageDiscard, load_rgb
from stages import align as align_stage

REPO_ROOT = Path(__file__).resolve().parents[1]
S = 224
PADDING = 0.5


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(AlignConfig(frame_size=S, padding=PADDING))


@pytest.fixture(scope="module")
def photos(small_slice) -> list[np.ndarray]:
    """One photo of each of the first four identities of the slice."""
    paths = small_slice.groupby("identity").head(1).abspath[:4]
    return [load_rgb(p, 50_000_000) for p in paths]


def _chip_details(aligner: FaceAligner, image: np.ndarray) -> "dlib.chip_details":
    faces = aligner.detect(image)
    assert faces, "expected a face in a sample photo"
    shape = aligner._predictor(image, max(faces, key=lambda r: r.area()))
    return dlib.get_face_chip_details(shape, size=S, padding=PADDING)


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("degrees", [0.0, 18.0, -25.0])
def test_matrix_is_exactly_dlib_chip_geometry(aligner, photos, degrees):
    """dlib.extract_image_chip of coordinate ramps returns, per frame pixel, the original position it
    sampled; our frame -> original matrix must reproduce it (bilinear interpolation of a ramp is exact)."""
    image = _rotate(photos[0], degrees)
    details = _chip_details(aligner, image)
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sampled = np.stack([dlib.extract_image_chip(xs, details), dlib.extract_image_chip(ys, details)], -1)
    grid = np.stack(np.meshgrid(np.arange(S), np.arange(S)), -1).reshape(-1, 2).astype(float)
    predicted = transform_points(grid, chip_to_image_matrix(details)).reshape(S, S, 2)
    inside = ((predicted[..., 0] > 1) & (predicted[..., 0] < width - 2)
              & (predicted[..., 1] > 1) & (predicted[..., 1] < height - 2))
    assert inside.mean() > 0.3
    assert np.abs(predicted - sampled)[inside].max() < 1e-6
    if degrees:  # the rotation of the photo shows up in the chip angle (sign as in image coordinates)
        assert np.degrees(details.angle) == pytest.approx(-degrees, abs=4)


def test_warp_reproduces_dlib_face_chip(aligner, photos):
    compared = 0
    for image in photos:
        details = _chip_details(aligner, image)
        scale = np.hypot(*chip_to_image_matrix(details)[:, 0])
        if scale > 1.4:  # we low-pass before shrinking and dlib does not: compare at about 1:1 instead
            image = cv2.resize(image, None, fx=1 / scale, fy=1 / scale, interpolation=cv2.INTER_AREA)
            details = _chip_details(aligner, image)
        frame_to_image = chip_to_image_matrix(details)
        assert np.hypot(*frame_to_image[:, 0]) < 1.5
        ours = warp_to_frame(image, image_to_frame_matrix(details), S).astype(int)
        theirs = dlib.extract_image_chip(image, details).astype(int)
        grid = np.stack(np.meshgrid(np.arange(S), np.arange(S)), -1).reshape(-1, 2).astype(float)
        source = transform_points(grid, frame_to_image).reshape(S, S, 2)
        height, width = image.shape[:2]
        interior = ((source[..., 0] > 1) & (source[..., 0] < width - 2)
                    & (source[..., 1] > 1) & (source[..., 1] < height - 2))
        diff = np.abs(ours - theirs)[interior]
        assert diff.mean() < 1.0 and diff.max() <= 3
        compared += 1
    assert compared == len(photos)


def test_real_faces_are_level_and_centred(aligned_small):
    result, rows = aligned_small
    S = result.frames.shape[1]  # noqa: N806 (the fixture follows params.yaml)
    assert len(rows) >= 20  # 24 photos, at most a few discards
    assert result.frames.shape == (len(rows), S, S, 3) and result.frames.dtype == np.uint8
    assert result.landmarks.shape == (len(rows), 68, 2) and result.landmarks.dtype == np.float32
    assert result.transforms.shape == (len(rows), 2, 3) and result.transforms.dtype == np.float64
    assert sorted(result.kept + [i for i, _ in result.discards]) == list(range(24))
    left_eye = result.landmarks[:, 36:42].mean(1)
    right_eye = result.landmarks[:, 42:48].mean(1)
    tilt = np.degrees(np.arctan2(right_eye[:, 1] - left_eye[:, 1], right_eye[:, 0] - left_eye[:, 0]))
    assert np.median(np.abs(tilt)) < 3 and np.abs(tilt).max() < 12
    eye_mid = (left_eye + right_eye) / 2
    assert np.abs(eye_mid[:, 0] - (S - 1) / 2).max() < 0.08 * S  # centred horizontally
    nose_tip = result.landmarks[:, 30]
    assert np.abs(np.median(nose_tip[:, 0]) - (S - 1) / 2) < 0.03 * S
    assert (eye_mid[:, 1] < nose_tip[:, 1]).all()  # upright
    assert (result.frames.reshape(len(rows), -1).std(1) > 20).all()  # real image content, not blank


def test_frame_pixels_agree_with_frame_landmarks(aligner, aligned_small):
    """Landmarks found again on the aligned frame itself match the transformed ones."""
    result, _ = aligned_small
    errors = []
    for frame, landmarks in zip(result.frames[:6], result.landmarks[:6]):
        x0, y0 = landmarks.min(0)
        x1, y1 = landmarks.max(0)
        box = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        again = np.array([[p.x, p.y] for p in aligner._predictor(np.ascontiguousarray(frame), box).parts()])
        errors.append(np.linalg.norm(again - landmarks, axis=1).mean())
    assert np.median(errors) < 3.0


def test_exif_rotated_photo_aligns_like_the_upright_one(tmp_path, small_slice):
    upright_path = Path(small_slice.abspath[0])
    with Image.open(upright_path) as image:
        upright = image.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CCW to display": exif_transpose applies ROTATE_90
    upright.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "sideways.png", exif=exif)
    upright.save(tmp_path / "upright.png")
    result = align_images([tmp_path / "upright.png", tmp_path / "sideways.png"], workers=1, progress=False)
    assert result.kept == [0, 1]
    assert np.abs(result.landmarks[0] - result.landmarks[1]).max() < 0.5
    assert np.array_equal(result.frames[0], result.frames[1])


def _side_by_side(left: np.ndarray, right: np.ndarray, right_scale: float) -> np.ndarray:
    height = 400
    left = cv2.resize(left, (round(left.shape[1] * height / left.shape[0]), height))
    right_h = round(height * right_scale)
    right = cv2.resize(right, (round(right.shape[1] * right_h / right.shape[0]), right_h))
    canvas = np.full((height, left.shape[1] + right.shape[1], 3), 128, np.uint8)
    canvas[:, : left.shape[1]] = left
    canvas[height - right_h:, left.shape[1]:] = right
    return canvas


@pytest.mark.parametrize("policy, right_scale, expected", [
    ("discard", 1.0, "multiple_faces"),
    ("largest", 1.0, "kept"),
    ("largest_if_dominant", 1.0, "multiple_faces"),
    ("largest_if_dominant", 0.5, "kept"),
])
def test_multiple_faces_policy(tmp_path, photos, policy, right_scale, expected):
    canvas = _side_by_side(photos[1], photos[2], right_scale)
    Image.fromarray(canvas).save(tmp_path / "two.png")
    aligner = FaceAligner(AlignConfig(multiple_faces=policy, dominance_ratio=2.0))
    assert len(aligner.detect(canvas)) == 2
    if expected != "kept":
        with pytest.raises(ImageDiscard) as caught:
            aligner.align(canvas)
        assert caught.value.reason == expected
        return
    _, _, transform = aligner.align(canvas)
    face_centre = transform_points(np.array([[(S - 1) / 2, (S - 1) / 2]]), invert_affine(transform))[0]
    split = cv2.resize(photos[1], (round(photos[1].shape[1] * 400 / photos[1].shape[0]), 400)).shape[1]
    if right_scale < 1.0:
        assert face_centre[0] < split  # the dominant (left, larger) face was kept


def test_bad_inputs_are_counted_discards(tmp_path, small_slice):
    (tmp_path / "text.jpg").write_text("not an image")
    gradient = np.broadcast_to(np.linspace(0, 255, 320, dtype=np.float32)[None, :, None], (240, 320, 3))
    Image.fromarray(gradient.astype(np.uint8)).save(tmp_path / "gradient.png")
    paths = [small_slice.abspath[0], tmp_path / "text.jpg", tmp_path / "gradient.png", tmp_path / "nope.jpg",
             small_slice.abspath[1]]
    result = align_images(paths, workers=1, progress=False)
    assert result.kept == [0, 4]
    assert result.discards == [(1, "not_an_image"), (2, "no_face"), (3, "missing")]
    assert len(result.frames) == 2


@pytest.mark.parametrize("key, value, words", [
    ("detector", "mtcnn", ["hog", "cnn"]),
    ("multiple_faces", "all", ["discard", "largest", "largest_if_dominant"]),
    ("padding", -0.1, [">= 0"]),
    ("frame_size", 16, [">= 32"]),
])
def test_bad_params_are_one_line_errors(key, value, words):
    with pytest.raises(LeamError) as caught:
        align_images([], **{key: value})
    message = str(caught.value)
    assert "\n" not in message and f"align.{key}" in message
    assert all(word in message for word in words)


def _write_params(path: Path, **overrides) -> None:
    import yaml
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["align"].update(overrides)
    path.write_text(yaml.safe_dump(params))


def _stage(tmp_path: Path, monkeypatch) -> int:
    """Run the stage in-process from the repository root (as DVC does); returns the exit code."""
    monkeypatch.chdir(REPO_ROOT)
    argv = ["--params", str(tmp_path / "params.yaml"), "--index", str(tmp_path / "faces" / "index.csv"),
            "--faces-dir", str(tmp_path / "faces"), "--out", str(tmp_path / "aligned"),
            "--metrics", str(tmp_path / "metrics.json"), "--examples", "2"]
    return run_stage("align", align_stage.main, align_stage.build_parser(), argv)


def test_stage_writes_contract_and_accounts_for_every_image(tmp_path, small_slice, monkeypatch):
    rows = small_slice.groupby("identity").head(2).head(6).copy()
    faces = tmp_path / "faces"
    (faces / "images").mkdir(parents=True)
    (faces / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    index = pd.DataFrame({
        "image_id": [f"{i}/{Path(f).stem}" for i, f in zip(rows.identity, rows.file)],
        "identity": rows.identity, "gender": rows.gender, "path": rows.abspath,  # absolute paths
        "sha256": rows.sha256, "source": "sample"})
    index.loc[index.index[0], "path"] = os.path.relpath(rows.abspath.iloc[0], REPO_ROOT)  # relative to the repo
    broken = {"image_id": f"{rows.identity.iloc[0]}/broken", "identity": rows.identity.iloc[0],
              "gender": rows.gender.iloc[0], "sha256": "0", "source": "sample",
              "path": os.path.relpath(faces / "images" / "broken.jpg", REPO_ROOT)}
    index = pd.concat([index, pd.DataFrame([broken])], ignore_index=True)
    index.to_csv(faces / "index.csv", index=False)
    pd.DataFrame([{"image_id": "x/lost", "path": "data/faces/images/x/lost.jpg", "reason": "checksum"}]).to_csv(
        faces / "discards.csv", index=False)
    _write_params(tmp_path / "params.yaml", workers=2)

    assert _stage(tmp_path, monkeypatch) == 0

    out = tmp_path / "aligned"
    kept = pd.read_csv(out / "index.csv")
    discards = pd.read_csv(out / "discards.csv")
    frames = np.load(out / "frames.npy")
    assert list(kept.columns) == ["row", "image_id", "identity", "gender", "path", "sha256", "source"]
    assert list(kept.row) == list(range(len(kept)))
    assert frames.shape == (len(kept), S, S, 3) and frames.dtype == np.uint8
    assert np.load(out / "landmarks.npy").shape == (len(kept), 68, 2)
    assert np.load(out / "transforms.npy").shape == (len(kept), 2, 3)
    assert 0 in kept.row.values and kept.path.iloc[0] == index.path.iloc[0]  # the relative path was found
    assert set(kept.image_id) | set(discards.image_id) == set(index.image_id) | {"x/lost"}
    assert not set(kept.image_id) & set(discards.image_id)
    assert list(kept.image_id) == [i for i in index.image_id if i in set(kept.image_id)]  # faces-index order
    assert dict(zip(discards.image_id, discards.reason))[broken["image_id"]] == "unreadable"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == len(index) + 1 and metrics["kept"] == len(kept)
    assert metrics["discarded_by_reason"]["checksum"] == 1
    assert sum(g["images"] for g in metrics["by_gender"].values()) == metrics["images"]
    examples = sorted((out / "examples").glob("*.png"))
    assert len(examples) == 2 and cv2.imread(str(examples[0])).shape == (S, S, 3)


def test_stage_bad_param_is_one_error_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "faces").mkdir()
    pd.DataFrame(columns=["image_id", "identity", "gender", "path", "sha256", "source"]).to_csv(
        tmp_path / "faces" / "index.csv", index=False)
    _write_params(tmp_path / "params.yaml", detector="viola")
    assert _stage(tmp_path, monkeypatch) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "hog" in lines[0] and "cnn" in lines[0]


def test_large_photo_is_shrunk_with_exact_geometry(tmp_path, small_slice):
    """A 4x upscaled copy goes through the area-averaging path; frame and landmarks match the original's."""
    original = load_rgb(small_slice.abspath[3], 50_000_000)
    big = cv2.resize(original, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    Image.fromarray(original).save(tmp_path / "original.png", compress_level=1)
    Image.fromarray(big).save(tmp_path / "big.png", compress_level=1)
    result = align_images([tmp_path / "original.png", tmp_path / "big.png"], max_side=600, workers=1,
                          progress=False)
    assert result.kept == [0, 1]
    assert np.hypot(*invert_affine(result.transforms[1])[:, 0]) > 3  # really shrinking
    assert np.median(np.linalg.norm(result.landmarks[0] - result.landmarks[1], axis=1)) < 1.5
    assert np.abs(result.frames[0].astype(int) - result.frames[1].astype(int)).mean() < 8
    # sub-pixel check of the crop + resize bookkeeping: no shift against a direct (aliased) warp
    direct = cv2.warpAffine(big, result.transforms[1], (S, S), flags=cv2.INTER_LINEAR)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64) for f in (result.frames[1], direct)]
    (dx, dy), _ = cv2.phaseCorrelate(*grey)
    (zero_x, zero_y), _ = cv2.phaseCorrelate(grey[1], grey[1])  # OpenCV reports (0.5, 0.5) for no shift
    assert abs(dx - zero_x) < 0.15 and abs(dy - zero_y) < 0.15


def test_cnn_detector_finds_the_same_face(small_slice):
    paths = list(small_slice.abspath[:2])
    hog = align_images(paths, detector="hog", upsample=0, max_side=400, workers=1, progress=False)
    cnn = align_images(paths, detector="cnn", upsample=0, max_side=400, workers=1, progress=False)
    assert cnn.kept == hog.kept == [0, 1]
    assert np.median(np.linalg.norm(cnn.landmarks - hog.landmarks, axis=2)) < 4
