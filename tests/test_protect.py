"""leam.protect: PGD stays in its mask and epsilon ball, finds what a network looks at, never touches a
held-out network, and its saved 8-bit photos reproduce the reported cosines.

Real faces come from the sample (``occlusion_faces``: 2 identities x 3 aligned photos); networks are the
tiny random CNN of the occlusion tests, a toy network that looks at one patch only, and dlib's real ResNet.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from leam import protect as pr
from leam.config import load_config
from leam.errors import LeamError
from leam.face_region import face_region
from leam.io import example_name, write_png_atomic
from leam.occlusion import Target
from tests.conftest import REPO_ROOT
from tests.occlusion_faces import FRAME, PADDING, first_references, occlusion_faces, smooth_maps, tiny_target

__all__ = ["occlusion_faces"]  # the fixture, re-exported for pytest

SIZE = 32


class PatchNet(nn.Module):
    """Embeds only the 8 x 8 patch at rows/cols 8..15 of its 32 px input (a fixed random linear map)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 8 * 8, 16)
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc((images[:, :, 8:16, 8:16] / 127.5 - 1.0).flatten(1))


def identity_target(module: nn.Module, count: int, name: str = "toy") -> Target:
    """A target whose input is the frame itself (identity warp: grid_sample hits pixel centres exactly)."""
    return Target(name, module, SIZE, np.repeat(np.array([[[1.0, 0, 0], [0, 1.0, 0]]]), count, axis=0))


def toy_frames(count: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(count, 3, SIZE, SIZE)).astype(np.float32))


def patch_references(frames: torch.Tensor, target: Target) -> dict[str, torch.Tensor]:
    """Each frame's reference: the embedding of a slightly different frame (at r = f(x) the gradient of the cosine
    is zero, as for a photo compared with itself)."""
    other = torch.clamp(frames + torch.from_numpy(np.random.default_rng(5).normal(0, 20, frames.shape)).float(), 0, 255)
    return {target.name: target.embed(other, np.arange(len(frames)))}


# ------------------------------------------------------------------------------------- PGD's constraints
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), epsilon=st.floats(0.5, 255.0, allow_subnormal=False),
       density=st.floats(0.0, 1.0, allow_subnormal=False),
       steps=st.integers(1, 3))
def test_pgd_never_leaves_its_mask_or_its_epsilon_ball(seed, epsilon, density, steps):
    frames = toy_frames(3, seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 8)).eval()
    torch.manual_seed(seed)
    target = identity_target(net, 3)
    masks = torch.from_numpy(np.random.default_rng(seed).random((3, SIZE, SIZE)) < density)
    references = {"toy": torch.randn(3, 8)}
    delta, allowed = pr.optimise(frames, np.arange(3), [target], references, masks,
                                 torch.full((3,), epsilon), steps)
    assert torch.equal(allowed, masks)
    assert not delta[~masks[:, None].expand_as(delta)].any(), "changed a pixel outside the mask"
    assert delta.abs().max() <= np.floor(epsilon)
    assert torch.equal(delta, delta.round()), "not an 8-bit perturbation"
    protected = frames + delta
    assert protected.min() >= 0 and protected.max() <= 255


def test_sparse_location_changes_exactly_its_k_gradient_pixels_anywhere():
    frames = toy_frames(2)
    target = identity_target(PatchNet(), 2)
    counts = torch.tensor([5, 20])
    references = patch_references(frames, target)
    delta, allowed = pr.optimise(frames, np.arange(2), [target], references, torch.zeros(2, SIZE, SIZE, dtype=bool),
                                 torch.full((2,), 16.0), 3, sparse_counts=counts)
    assert allowed.flatten(1).sum(1).tolist() == [5, 20]
    assert not delta[~allowed[:, None].expand_as(delta)].any()
    rows, cols = np.nonzero(allowed.any(0).numpy())
    assert rows.min() >= 8 and rows.max() < 16 and cols.min() >= 8 and cols.max() < 16, "chose pixels the net ignores"


def test_a_mask_on_what_the_network_sees_succeeds_where_one_elsewhere_fails():
    frames = toy_frames(4, seed=1)
    target = identity_target(PatchNet(), 4)
    references = patch_references(frames, target)
    on_patch = torch.zeros(4, SIZE, SIZE, dtype=bool)
    on_patch[:, 8:16, 8:16] = True
    elsewhere = torch.zeros(4, SIZE, SIZE, dtype=bool)
    elsewhere[:, 20:28, 20:28] = True
    results = {"clean": pr.ensemble_score(frames, np.arange(4), [target], references)}
    for name, mask in (("patch", on_patch), ("elsewhere", elsewhere)):
        delta, _ = pr.optimise(frames, np.arange(4), [target], references, mask, torch.full((4,), 32.0), 10)
        results[name] = pr.ensemble_score(frames + delta, np.arange(4), [target], references)
    assert (results["clean"] - results["patch"] > 0.3).all(), results
    assert torch.equal(results["elsewhere"], results["clean"]), "a mask the net cannot see changed its score"


def test_quantise_rounds_inside_the_floor_of_epsilon_and_the_pixel_range():
    frames = torch.tensor([0.0, 10.0, 250.0, 128.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    delta = torch.tensor([-3.7, 7.6, 9.0, 0.4]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    out = pr.quantise(delta, frames, torch.tensor([7.9]))
    assert out[0, 0].flatten().tolist() == [0.0, 7.0, 5.0, 0.0]


# ------------------------------------------------------------------------------------- real faces
def _plan(faces: dict) -> pr.Plan:
    """Protect each person's photos 1 and 2 against the first (the baseline reference), guides smooth maps."""
    ids, identity = faces["image_id"], faces["identity"]
    rows = [r for r, ref in enumerate(first_references(identity)) if ref != [r] and r not in
            [identity.index(i) for i in dict.fromkeys(identity)]]
    references = [first_references(identity)[r] for r in rows]
    photos = pd.DataFrame({"image_id": [ids[r] for r in rows], "identity": [identity[r] for r in rows],
                           "gender": "unknown", "frame_row": rows, "reference_rows": references})
    landmarks = faces["landmarks"][rows]
    guides = {"leam:overall": smooth_maps(len(rows), seed=3), "person:overall": smooth_maps(len(rows), seed=4)}
    return pr.Plan(photos, faces["frames"][rows], landmarks, face_region("landmarks", FRAME, landmarks=landmarks),
                   guides, np.full(len(rows), 2))


def _gallery(target: Target, faces: dict, name: str) -> pr.Gallery:
    clean = torch.from_numpy(faces["frames"]).permute(0, 3, 1, 2).float()
    all_rows = Target(target.name, target.module, target.input_size,
                      np.repeat(target.frame_to_input[:1], len(clean), axis=0))
    return pr.Gallery.from_embeddings(name, all_rows.embed(clean, np.arange(len(clean))).numpy(), faces["identity"], 0.5)


DESIGN = pr.Design(("overall",), 0.05, (0.1,), 16.0, (), ("black", "noise"), ("face",), True, True, 2)


def test_the_held_out_network_is_never_called_while_the_protection_is_optimised(occlusion_faces):
    the_plan = _plan(occlusion_faces)
    source = tiny_target(the_plan.landmarks, "source", seed=0)
    held_out = tiny_target(the_plan.landmarks, "held_out", seed=1)
    phase = {"optimising": False, "held_out_calls": 0}

    def guard(module, inputs):
        if phase["optimising"] or torch.is_grad_enabled():
            raise AssertionError("the optimiser touched the held-out network")
        phase["held_out_calls"] += 1

    held_out.module.register_forward_pre_hook(guard)
    galleries = {"source": _gallery(source, occlusion_faces, "source")}
    phase["optimising"] = True
    protected = pr.protect_photos(the_plan, list(DESIGN.conditions()), DESIGN, [source], galleries, seed=0, batch_size=8)
    phase["optimising"] = False
    networks = [(source, galleries["source"], "sources"), (held_out, _gallery(held_out, occlusion_faces, "held_out"),
                                                            "held_out")]
    results = pr.score_photos(the_plan, protected, networks, batch_size=8)
    assert phase["held_out_calls"] > 0 and all(p.grad is None for p in held_out.module.parameters())
    assert set(results.role) == {"sources", "held_out"}
    assert len(results) == len(protected.conditions) * len(the_plan.photos) * 2


def test_leave_one_out_never_optimises_against_the_network_it_scores(occlusion_faces, monkeypatch):
    """Three toy networks: in each rotation the left-out one sees only no-grad scoring passes, the other two
    are the ensemble, and every network is scored once, on the rotated condition's photos."""
    the_plan = _plan(occlusion_faces)
    targets = {name: tiny_target(the_plan.landmarks, name, seed=k) for k, name in enumerate(["a", "b", "c"])}
    galleries = {name: _gallery(t, occlusion_faces, name) for name, t in targets.items()}
    calls = {name: {"grad": 0, "scored": 0} for name in targets}

    def counter(name):
        def count(module, inputs):
            calls[name]["grad" if torch.is_grad_enabled() else "scored"] += 1
        return count

    for name, target in targets.items():
        target.module.register_forward_pre_hook(counter(name))
    asked = []

    def plan_for(others):
        asked.append(list(others))
        for name in targets:                       # the optimiser's calls so far belong to the previous rotation
            calls[name]["grad"] = 0
        return the_plan

    own = next(c for c, q in DESIGN.conditions().items() if "what" in q and c.fill == "optimised")
    left_grad = {}
    original = pr.experiment.score_photos

    def scoring(plan, protected, networks, *args, **kwargs):
        (target, _, role), = networks
        left_grad[target.name] = calls[target.name]["grad"]   # grad passes of the left-out one while optimising
        assert role == "left_out" and all(calls[n]["grad"] > 0 for n in targets if n != target.name)
        return original(plan, protected, networks, *args, **kwargs)

    monkeypatch.setattr(pr.experiment, "score_photos", scoring)
    results, frames, seen, seconds = pr.leave_one_out(plan_for, the_plan.photos, own, DESIGN, targets, galleries,
                                                      seed=0, batch_size=8)
    assert asked == [["b", "c"], ["a", "c"], ["a", "b"]]
    assert left_grad == {"a": 0, "b": 0, "c": 0}
    assert sorted(results.network.unique()) == ["a", "b", "c"] and set(results.role) == {"left_out"}
    assert set(results.condition) == {pr.without_name(own, n) for n in targets}
    assert len(results) == 3 * len(the_plan.photos) and set(frames) == set(targets) and set(seconds) == set(targets)
    assert (results["drop"] > 0).mean() > 0.5                      # transfer between toy nets is weak but real
    summary = pr.leave_one_out_summary(results, own, n_boot=50, seed=0)
    assert set(summary.network) == {"a", "b", "c", "left_out"}
    document = pr.leave_one_out_document(summary, own)
    pooled = document["networks"]["left_out"]["drop"]["mean"]
    assert pooled == pytest.approx(results["drop"].mean())
    changed = np.stack([frames[n] for n in targets]).astype(int) - the_plan.frames[None].astype(int)
    assert np.abs(changed).max() <= 16 and (changed != 0).any()


def test_saved_pngs_reproduce_the_reported_cosines_with_the_real_dlib_network(occlusion_faces, weights_dir, tmp_path):
    from leam.models.registry import get_spec

    spec = get_spec("dlib_resnet")
    the_plan = _plan(occlusion_faces)
    module = spec.load(weights_dir)
    source = Target.from_spec(spec, module, the_plan.landmarks, FRAME, PADDING)
    everyone = Target.from_spec(spec, module, occlusion_faces["landmarks"], FRAME, PADDING)
    clean = torch.from_numpy(occlusion_faces["frames"]).permute(0, 3, 1, 2).float()
    gallery = pr.Gallery.from_embeddings("dlib_resnet", everyone.embed(clean, np.arange(len(clean))).numpy(),
                                         occlusion_faces["identity"], 0.9)
    design = pr.Design(("overall",), 0.05, (), 32.0, (), (), ("face",), False, False, 3)
    conditions = [c for c in design.conditions() if c.location == "leam:overall"]
    protected = pr.protect_photos(the_plan, conditions, design, [source], {"dlib_resnet": gallery}, seed=0)
    results = pr.score_photos(the_plan, protected, [(source, gallery, "sources")])
    assert (results["drop"] > 0).all(), results[["condition", "drop"]]  # PGD lowered the objective on every photo
    for c, condition in enumerate(protected.conditions):
        paths = [write_png_atomic(tmp_path / condition.name / example_name(i), f)
                 for i, f in zip(the_plan.photos.image_id, protected.frames[c])]
        read = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths])
        assert np.array_equal(read, protected.frames[c])
        embedded = source.embed(torch.from_numpy(read).permute(0, 3, 1, 2).float(), np.arange(len(read)))
        reference = torch.nn.functional.normalize(gallery.embeddings[[r[0] for r in the_plan.photos.reference_rows]])
        cosine = torch.nn.functional.cosine_similarity(embedded, reference).numpy()
        reported = results[results.condition == condition.name].cosine.to_numpy()
        np.testing.assert_allclose(cosine, reported, atol=1e-4)
    vis = protected.visibility
    assert (vis.linf <= 32).all() and (vis.changed_pixels > 0).all() and (vis.ssim < 1).all()


def test_conditions_answer_each_question_once():
    conditions = DESIGN.conditions()
    names = [c.name for c in conditions]
    assert len(names) == len(set(names))
    by_question = {q: [c for c, qs in conditions.items() if q in qs] for q in pr.QUESTIONS}
    assert {c.location for c in by_question["where"]} == {"leam:overall", "random_face", "sparse"}
    assert {c.fill for c in by_question["what"]} == {"optimised", "black", "noise"}
    assert {c.location for c in by_question["person"]} == {"person:overall", "leam:overall", "random_face"}
    assert sorted({c.budget for c in by_question["budget"]}) == [0.05, 0.1]


def test_person_maps_leave_the_photo_out():
    guides = np.zeros((4, 2, 2), dtype=np.float32)
    guides[0, 0, 0] = guides[1, 1, 1] = guides[2, 0, 1] = guides[3, 1, 0] = 1.0
    maps, counts = pr.person_maps(guides, ["a", "a", "a", "b"], [0, 3])
    assert counts.tolist() == [2, 0]
    assert maps[0, 0, 0] == 0 and maps[0, 1, 1] == 0.5 and maps[0, 0, 1] == 0.5
    assert not maps[1].any()


def test_far_threshold_accepts_at_most_the_rate():
    cosines = np.linspace(-1, 1, 10_000)
    threshold = pr.far_threshold(cosines, 1e-3)
    assert (cosines > threshold).mean() <= 1e-3 and (cosines >= threshold).mean() > 0
    with pytest.raises(LeamError, match="cannot resolve"):
        pr.far_threshold(cosines[:500], 1e-3)


# ------------------------------------------------------------------------------------- bad params
def _shipped() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("key, value, words", [
    ("epsilon", 0.0, "protect.epsilon=0.0"), ("epsilon", 300.0, "protect.epsilon=300.0"),
    ("epsilons", [8.0, -1.0], "protect.epsilons[1]=-1.0"), ("budget", 0.0, "protect.budget=0.0"),
    ("budgets", [1.5], "protect.budgets[0]=1.5"), ("held_out", ["dlib_resnet"], "also in protect.sources"),
])
def test_bad_protect_params_are_one_line(tmp_path, key, value, words):
    raw = copy.deepcopy(_shipped())
    raw["protect"][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(LeamError) as caught:
        load_config(path)
    assert "\n" not in str(caught.value) and words in str(caught.value), str(caught.value)


def test_networks_outside_models_are_one_line_and_held_out_defaults_to_the_rest():
    models = ["dlib_resnet", "mobileface", "faceres"]
    assert pr.networks(["dlib_resnet"], [], models) == (["dlib_resnet"], ["mobileface", "faceres"])
    with pytest.raises(LeamError, match="protect.held_out has 'arcface'"):
        pr.networks(["dlib_resnet"], ["arcface"], models)
    with pytest.raises(LeamError, match="protect.sources has 'x'"):
        pr.networks(["x"], [], models)
