"""leam.occlusion.drops: the design's checks and the similarity drops of a tiny target on real faces, and the
versions of a batch queued across masks and thresholds equal to their unbatched drops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from leam import occlusion as occ
from leam.embedding import frames_to_tensor
from leam.errors import LeamError
from leam.face_region import landmark_hull
from leam.frame import frame_to_input
from leam.occlusion.targets import cosine
from leam.topt import pixel_ranks, top_count
from tests.occlusion_faces import (  # noqa: F401
    FRAME,
    TINY_INPUT,
    TinyFaceNet,
    design,
    first_references,
    occlusion_faces,
    smooth_maps,
    tiny_target,
)


def test_bad_designs_are_one_line_errors() -> None:
    for bad in (0.0, 1.5):
        with pytest.raises(LeamError, match=rf"occlusion.thresholds={bad} is not a valid top-t fraction"):
            occ.Design([0.01, bad], "black", ["uniform"], 1, 0)
    with pytest.raises(LeamError, match="occlusion.fill='red'.*black, mean, blur"):
        occ.Design([0.01], "red", ["uniform"], 1, 0)
    with pytest.raises(LeamError, match="occlusion.random='gaussian'"):
        occ.Design([0.01], "black", ["gaussian"], 1, 0)
    with pytest.raises(LeamError, match="occlusion.random_repeats=-1 must be >= 0"):
        occ.Design([0.01], "black", ["uniform"], -1, 0)


def test_drops_positive_for_large_occlusion_and_clean_is_the_reference_cosine(occlusion_faces: dict) -> None:  # noqa: F811
    frames, landmarks = occlusion_faces["frames"], occlusion_faces["landmarks"]
    n = len(frames)
    target = tiny_target(landmarks)
    guides = {"tiny": {"overall": smooth_maps(n, seed=5)}}
    region = landmark_hull(landmarks, FRAME)
    timings: dict = {}
    references = first_references(occlusion_faces["identity"])
    drops = occ.occlusion_drops(frames, np.arange(n), occlusion_faces["image_id"], references,
                                region, [target], design(guides, thresholds=(1 / FRAME**2, 0.25)), batch_size=3,
                                timings=timings)
    assert list(drops.columns) == ["source", "target", "map", "threshold", "kind", "repeat", "image", "clean",
                                   "occluded", "drop"]
    # rows: per threshold (1 leam + 2 kinds x 2 repeats) x n images
    assert len(drops) == 2 * (1 + 2 * 2) * n
    one = drops[drops.threshold == 1 / FRAME**2]  # a single occluded pixel (t = 0 is not a top-t fraction)
    assert (one["drop"].abs() < 0.05).all()
    assert (drops.groupby("image")["clean"].nunique() == 1).all()  # one clean cosine per image
    big = drops[drops.threshold == 0.25]
    assert big["drop"].abs().min() > 0 and np.isfinite(big["drop"]).all()
    assert set(big.kind) == {"leam", "random_uniform", "random_face"}
    assert (drops.loc[drops.kind != "leam", "source"] == "none").all()
    # 2 batches x (clean + 2 thresholds x 5 masks) + 2 batches of reference images
    assert timings["tiny"].forwards == 2 * (1 + 2 * (1 + 2 * 2)) + 2
    reference_images = len({r[0] for r in references})  # each reference frame is embedded once
    assert timings["tiny"].images == n * (1 + 2 * (1 + 2 * 2)) + reference_images and timings["tiny"].ms_per_image > 0
    # The clean similarity is the cosine to the reference under the same model.
    with torch.inference_mode():
        emb = F.normalize(TinyFaceNet()(frame_to_input(torch.from_numpy(frames).permute(0, 3, 1, 2).float(),
                                                       target.frame_to_input, TINY_INPUT)), dim=1)
    expected = (emb * emb[[r[0] for r in references]]).sum(1).numpy()
    got = one[one.kind == "leam"].sort_values("image").clean.to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_face_baseline_larger_than_region_is_a_counted_discard(occlusion_faces: dict) -> None:  # noqa: F811
    frames, landmarks = occlusion_faces["frames"][:2], occlusion_faces["landmarks"][:2]
    region = landmark_hull(landmarks, FRAME)
    fraction = float(region.reshape(2, -1).sum(1).max()) / FRAME**2 + 0.05  # more pixels than the face has
    drops = occ.occlusion_drops(frames, np.arange(2), occlusion_faces["image_id"][:2], [[1], [0]], region,
                                [tiny_target(landmarks)], design({}, thresholds=(fraction,), kinds=("face",), repeats=1),
                                batch_size=2)
    assert drops.occluded.isna().all() and len(drops) == 2


def test_face_baselines_need_a_region_and_no_target_gives_an_empty_table(occlusion_faces: dict) -> None:  # noqa: F811
    frames, landmarks = occlusion_faces["frames"][:2], occlusion_faces["landmarks"][:2]
    with pytest.raises(LeamError, match="need a face region"):
        occ.occlusion_drops(frames, np.arange(2), occlusion_faces["image_id"][:2], [[1], [0]], None,
                            [tiny_target(landmarks)], design({}, kinds=("blob",), repeats=1))
    empty = occ.occlusion_drops(frames, np.arange(2), occlusion_faces["image_id"][:2], [[1], [0]], None, [],
                                design({}, kinds=("uniform",), repeats=1))
    assert empty.empty and "drop" in empty.columns


def _masks_by_hand(faces: dict, guide: np.ndarray, region: np.ndarray) -> list[tuple[str, str, str, torch.Tensor]]:
    """(source, map, kind, ranks) of every mask, ranked with the public functions (no TopPixels)."""
    ids, inside = faces["image_id"], torch.from_numpy(region)
    return [("tiny", "overall", "leam", pixel_ranks(occ.upsample_maps(torch.from_numpy(guide), FRAME))),
            ("none", "none", "random_uniform", pixel_ranks(occ.random_scores(ids, FRAME, 0, "uniform", 0))),
            ("none", "none", "random_face", pixel_ranks(occ.random_scores(ids, FRAME, 0, "face", 0), valid=inside)),
            ("none", "none", "random_blob", pixel_ranks(occ.random_blob_scores(ids, inside, 0, 0)))]


def test_versions_queued_across_masks_and_thresholds_equal_their_unbatched_drops(occlusion_faces: dict) -> None:  # noqa: F811
    faces = {key: value[:6] for key, value in occlusion_faces.items()}
    frames, landmarks, n = faces["frames"], faces["landmarks"], len(faces["frames"])
    target, guide = tiny_target(landmarks), smooth_maps(n, seed=9)
    region = landmark_hull(landmarks, FRAME)
    references = first_references(faces["identity"])
    plan = design({"tiny": {"overall": guide}}, kinds=("uniform", "face", "blob"), repeats=1)
    keys = ["kind", "threshold", "image"]

    def drops(batch_size: int, timings: dict | None = None) -> pd.DataFrame:
        table = occ.occlusion_drops(frames, np.arange(n), faces["image_id"], references, region, [target], plan,
                                    batch_size=batch_size, timings=timings)
        return table.sort_values(keys).reset_index(drop=True)

    clean_frames = frames_to_tensor(frames)
    ref_rows = sorted({r[0] for r in references})
    with torch.no_grad():
        ref_unit = target.embed(frames_to_tensor(frames[ref_rows]), np.array(ref_rows))
    ref = ref_unit[[ref_rows.index(r[0]) for r in references]]
    by_version, by_frame = [], []
    for source, map_name, kind, ranks in _masks_by_hand(faces, guide, region):
        for threshold in plan.thresholds:
            count = top_count(threshold, FRAME * FRAME)
            occluded = occ.occlude(clean_frames, ranks < count, torch.zeros_like(clean_frames))
            # the layout before: one forward per (mask, threshold) over the whole batch of photos
            whole = cosine(target.embed(occluded, np.arange(n)), ref).numpy()
            # unbatched: every occluded frame alone
            alone = np.array([float(cosine(target.embed(occluded[i:i + 1], np.array([i])), ref[i:i + 1]))
                              for i in range(n)])
            for image in range(n):
                by_version.append((kind, threshold, image, whole[image]))
                by_frame.append((kind, threshold, image, alone[image]))
    by_version = pd.DataFrame(by_version, columns=[*keys, "occluded"]).sort_values(keys).reset_index(drop=True)
    by_frame = pd.DataFrame(by_frame, columns=[*keys, "occluded"]).sort_values(keys).reset_index(drop=True)

    one_batch = drops(n)  # a full batch: each forward holds one version of every photo, as before
    assert one_batch[keys].equals(by_version[keys]) and np.isfinite(one_batch.occluded).all()
    assert np.array_equal(one_batch.occluded.to_numpy(), by_version.occluded.to_numpy().astype(np.float32))
    timings: dict = {}
    queued = drops(4, timings)  # 4 + 2 photos: the 2's 8 versions share 4 forwards of 4 frames
    assert timings["tiny"].forwards == 1 + (1 + 8) + (1 + 4)  # references, then clean + versions per batch
    # every pass has at least 16 rows (leam.device.padded_forward): the batching changes no value
    for table in (queued, one_batch):
        assert np.array_equal(table.occluded.to_numpy(), by_frame.occluded.to_numpy().astype(np.float32))
    pd.testing.assert_frame_equal(queued, one_batch, check_exact=True)
