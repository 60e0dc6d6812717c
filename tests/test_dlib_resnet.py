"""The PyTorch port of dlib's face-recognition ResNet against dlib itself, on real face chips."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import cv2
import dlib
import numpy as np
import pandas as pd
import pytest
import torch

from leam.assets import dlib_model_path
from leam.errors import ChecksumError, LeamError
from leam.frame import dlib_chip_matrix, frame_to_input
from leam.models import dlib_resnet
from leam.models.dlib_format import load_network
from leam.models.registry import get_spec
from stages.weights import convert_dlib_resnet

DETECT_SIDE = 480  # detection runs on a copy downscaled to this side; landmarks on the full image


def pick_small_photos(manifest: pd.DataFrame, mirror: Path, identities: int = 10, per_identity: int = 3,
                      max_side: int = 640, seed: int = 0) -> pd.DataFrame:
    """A seeded gender-balanced set of small mirror photos (detection on large photos is slow)."""
    small = manifest[np.maximum(manifest.width, manifest.height) <= max_side]
    small = small[small.groupby("identity").identity.transform("size") >= per_identity]
    rng = np.random.default_rng(seed)
    names = []
    for gender in ("female", "male"):
        pool = sorted(small.loc[small.gender == gender, "identity"].unique())
        names += list(rng.choice(pool, size=identities // 2, replace=False))
    rows = (small[small.identity.isin(names)].sort_values(["identity", "file"])
            .groupby("identity").head(per_identity).reset_index(drop=True))
    rows["abspath"] = [str(mirror / f) for f in rows.file]
    return rows


@functools.lru_cache(maxsize=4)
def detected_faces(paths: tuple[str, ...]) -> tuple[tuple[int, np.ndarray, dlib.full_object_detection], ...]:
    """(position in ``paths``, RGB image, 68-point shape) for each photo with exactly one HOG detection.

    Cached so the test modules that need real faces share one detection pass.
    """
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path("landmarks68")))
    found = []
    for position, path in enumerate(paths):
        image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        scale = min(1.0, DETECT_SIDE / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        boxes = detector(small, 0) or detector(small, 1)
        if len(boxes) != 1:
            continue
        box = boxes[0]
        box = dlib.rectangle(*(int(round(v / scale)) for v in (box.left(), box.top(), box.right(), box.bottom())))
        found.append((position, image, predictor(image, box)))
    return tuple(found)


@pytest.fixture(scope="session")
def real_faces(mirror_manifest, faces_mirror):
    photos = pick_small_photos(mirror_manifest, faces_mirror)
    faces = detected_faces(tuple(photos.abspath))
    assert len(faces) >= 20, f"only {len(faces)} of {len(photos)} sample photos gave one face"
    return photos, faces


@pytest.fixture(scope="session")
def recognition_chips(real_faces) -> np.ndarray:
    """dlib's own 150x150 recognition chips (padding 0.25), uint8 (N, 150, 150, 3)."""
    return np.stack([dlib.get_face_chip(image, shape, size=150, padding=0.25) for _, image, shape in real_faces[1]])


@pytest.fixture(scope="session")
def dlib_descriptors(recognition_chips) -> np.ndarray:
    recognizer = dlib.face_recognition_model_v1(str(dlib_model_path("recognition")))
    return np.array([np.array(recognizer.compute_face_descriptor(chip)) for chip in recognition_chips])


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    entry = convert_dlib_resnet(folder)
    (folder / "weights.json").write_text(json.dumps({"dlib_resnet": entry}))
    return folder


@pytest.fixture(scope="module")
def model(weights_dir):
    return get_spec("dlib_resnet").load(weights_dir)


def to_tensor(chips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(chips).permute(0, 3, 1, 2).float()


def test_port_matches_dlib_descriptors(model, recognition_chips, dlib_descriptors):
    with torch.no_grad():
        ours = model(to_tensor(recognition_chips)).numpy()
    assert ours.shape == (len(recognition_chips), 128)
    max_diff = float(np.abs(ours - dlib_descriptors).max())
    print(f"max |torch - dlib| over {len(ours)} chips: {max_diff:.3g}")
    assert max_diff <= 1e-4
    # not normalised, like dlib: norms vary around ~0.5 rather than being exactly 1
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-3)


def test_module_contract(model):
    spec = get_spec("dlib_resnet")
    assert (spec.input_size, spec.embedding_dim, spec.verification_threshold) == (150, 128, 0.6)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert len(spec.layers) == 9 and len(set(spec.layers)) == 9
    shapes = {}
    for name in spec.layers:
        model.get_submodule(name).register_forward_hook(lambda _m, _i, out, n=name: shapes.__setitem__(n, out))
    image = torch.full((1, 3, 150, 150), 100.0, requires_grad=True)
    model(image).sum().backward()  # gradients flow to the input through every hooked layer
    assert image.grad is not None and image.grad.abs().sum() > 0
    resolutions = {shapes[name].shape[-1] for name in spec.layers}
    assert resolutions == {72, 35, 17, 8, 4, 2}
    assert shapes["layer4.0"].shape[1:] == (256, 4, 4)  # 3x3 main path zero-padded to the 4x4 shortcut


def test_residual_add_pads_channels_and_bottom_right():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    out = dlib_resnet.add_zero_padded(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, 0, 0] == 11 and out[0, 0, 3, 3] == 10 and out[0, 1, 3, 3] == 0 and out[0, 1, 0, 0] == 1


def test_converted_layers_follow_the_network_type():
    network = load_network(dlib_model_path("recognition"))
    plan = dlib_resnet.expected_dlib_layers(dlib_resnet.DlibResNet())
    assert [layer.kind for layer in network.layers] == [kind for kind, _, _ in plan]
    network.layers[10].kind, network.layers[11].kind = network.layers[11].kind, network.layers[10].kind
    with pytest.raises(LeamError, match="dlib layer 10"):
        dlib_resnet.convert_state_dict(network)


def test_bad_images_are_clear_errors(model):
    with pytest.raises(LeamError, match=r"\(N, 3, 150, 150\)"):
        model(torch.zeros(1, 3, 112, 112))
    with pytest.raises(LeamError, match="float tensor"):
        model(torch.zeros(1, 3, 150, 150, dtype=torch.uint8))


def test_load_refuses_bad_weights(weights_dir, tmp_path):
    spec = get_spec("dlib_resnet")
    with pytest.raises(LeamError, match="weights.json"):
        spec.load(tmp_path)
    index = json.loads((weights_dir / "weights.json").read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "weights.json").write_text(json.dumps(index))
    with pytest.raises(LeamError, match="not found"):
        spec.load(broken)
    data = bytearray((weights_dir / "dlib_resnet.pt").read_bytes())
    data[-100] ^= 0xFF
    (broken / "dlib_resnet.pt").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        spec.load(broken)
    state = torch.load(weights_dir / "dlib_resnet.pt", weights_only=True)
    state["extra.weight"] = state.pop("fc.weight")
    torch.save(state, broken / "dlib_resnet.pt")
    from leam.io import sha256_file
    index["dlib_resnet"]["sha256"] = sha256_file(broken / "dlib_resnet.pt")
    (broken / "weights.json").write_text(json.dumps(index))
    with pytest.raises(LeamError, match="missing keys fc.weight; unexpected keys extra.weight"):
        spec.load(broken)


def test_frame_warp_reproduces_dlib_recognition_chip(model, real_faces, recognition_chips):
    """Analysis frame (224, padding 0.5) warped by the registry's fixed affine ~= dlib's 150/0.25 chip."""
    frame_size, padding = 224, 0.5
    frames = np.stack([dlib.extract_image_chip(image, dlib.get_face_chip_details(shape, frame_size, padding))
                       for _, image, shape in real_faces[1]])
    matrices = get_spec("dlib_resnet").input_warp(np.zeros((len(frames), 68, 2)), frame_size, padding)
    np.testing.assert_allclose(matrices[0], dlib_chip_matrix(frame_size, padding, 150, 0.25))
    warped = frame_to_input(to_tensor(frames), matrices, 150)
    direct = to_tensor(recognition_chips)
    # compare away from the chip border, where the two resamplings treat pixels outside the photo differently
    diff = (warped - direct).abs()[..., 4:-4, 4:-4]
    per_image = diff.mean(dim=(1, 2, 3))
    assert per_image.max() < 4.0, per_image  # gray levels, 0..255; double interpolation blurs slightly
    # a wrong scale or shift by one pixel would be far worse than the double interpolation
    shifted = torch.roll(direct, shifts=2, dims=3)
    assert (warped - shifted).abs()[..., 4:-4, 4:-4].mean() > 1.5 * diff.mean()
    with torch.no_grad():
        distance = (model(warped) - model(direct)).norm(dim=1)
    print(f"embedding distance frame-warp vs dlib chip: mean {distance.mean():.4f}, max {distance.max():.4f}")
    assert distance.max() < 0.1  # far below dlib's 0.6 same-person threshold
