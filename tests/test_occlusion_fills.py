"""leam.occlusion.fills: what occluded pixels become, on real faces."""

from __future__ import annotations

import pytest
import torch

from leam import occlusion as occ
from leam.errors import LeamError
from leam.topt import top_fraction_mask
from tests.occlusion_faces import FRAME, occlusion_faces, smooth_maps  # noqa: F401


def test_fills_replace_only_masked_pixels(occlusion_faces: dict) -> None:  # noqa: F811
    batch = torch.from_numpy(occlusion_faces["frames"][:2]).permute(0, 3, 1, 2).float()
    mask = top_fraction_mask(torch.from_numpy(smooth_maps(2, FRAME)), 0.05)
    for fill in occ.FILLS:
        out = occ.occlude(batch, mask, occ.fill_values(batch, fill))
        assert torch.equal(out.permute(0, 2, 3, 1)[~mask], batch.permute(0, 2, 3, 1)[~mask])
        assert not torch.equal(out, batch)
    black = occ.occlude(batch, mask, occ.fill_values(batch, "black"))
    assert (black.permute(0, 2, 3, 1)[mask] == 0).all()
    mean = occ.occlude(batch, mask, occ.fill_values(batch, "mean"))
    assert torch.allclose(mean[0, :, mask[0]], batch[0].mean(dim=(1, 2))[:, None].expand(3, int(mask[0].sum())))
    blurred = occ.fill_values(batch, "blur")
    # A blur keeps the mean colour and removes fine detail (smaller neighbour differences).
    assert torch.allclose(blurred.mean(dim=(2, 3)), batch.mean(dim=(2, 3)), atol=2.0)
    assert blurred.diff(dim=3).abs().mean() < 0.5 * batch.diff(dim=3).abs().mean()


def test_blur_keeps_a_constant_image() -> None:
    constant = torch.full((1, 3, 16, 16), 100.0)
    assert torch.allclose(occ.gaussian_blur(constant, sigma=2.0), constant)


def test_a_bad_fill_is_a_one_line_error() -> None:
    with pytest.raises(LeamError, match="occlusion.fill='red'.*black, mean, blur"):
        occ.fill_values(torch.zeros(1, 3, 8, 8), "red")
