"""leam.imageio.load_rgb on real photos and on a generated corpus of bad or unusual files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leam.imageio import ImageDiscard, load_rgb

LIMIT = 50_000_000


@pytest.fixture(scope="module")
def real_photo(small_slice) -> np.ndarray:
    with Image.open(small_slice.abspath[0]) as image:
        return np.asarray(image.convert("RGB"))


def _reason(path: Path, max_pixels: int = LIMIT) -> str:
    with pytest.raises(ImageDiscard) as caught:
        load_rgb(path, max_pixels)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(caught.value.reason)
    return caught.value.reason


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims width x height, followed by a tiny IDAT (no huge allocation)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def test_real_photo_loads_as_rgb_uint8(small_slice):
    for path in small_slice.abspath[:3]:
        image = load_rgb(path, LIMIT)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.flags.c_contiguous
        assert image.std() > 10  # a real photo, not a blank


def test_unusable_files_are_discarded_with_reason(tmp_path, small_slice):
    real = Path(small_slice.abspath[0]).read_bytes()
    rng = np.random.default_rng(0)
    (tmp_path / "random.jpg").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "text.jpg").write_text("<html>404 not found</html>\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(real[: len(real) // 3])
    corrupt = bytearray(real)
    corrupt[len(real) // 4: len(real) // 4 + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (tmp_path / "corrupt_payload.jpg").write_bytes(bytes(corrupt[: len(real) // 2]))
    _png_header_only(tmp_path / "bomb.png", 60_000, 60_000)  # over Pillow's own hard limit too
    _png_header_only(tmp_path / "big.png", 9_000, 9_000)  # 81 Mpx: over our limit only

    assert _reason(tmp_path / "random.jpg") == "not_an_image"
    assert _reason(tmp_path / "text.jpg") == "not_an_image"
    assert _reason(tmp_path / "empty.png") == "not_an_image"
    assert _reason(tmp_path / "truncated.jpg") == "unreadable"
    assert _reason(tmp_path / "corrupt_payload.jpg") == "unreadable"
    assert _reason(tmp_path / "bomb.png") == "too_large"
    assert _reason(tmp_path / "big.png") == "too_large"
    assert _reason(tmp_path / "missing.jpg") == "missing"
    # the pixel limit is checked against the header of a perfectly good image too
    assert _reason(Path(small_slice.abspath[0]), max_pixels=1000) == "too_large"


def test_modes_become_rgb(tmp_path, real_photo):
    rgb = Image.fromarray(real_photo)
    rgb.convert("L").save(tmp_path / "grey.jpg", quality=95)
    grey = load_rgb(tmp_path / "grey.jpg", LIMIT)
    assert grey.shape == real_photo.shape
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])

    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as check:
        assert check.mode == "CMYK"
    cmyk = load_rgb(tmp_path / "cmyk.jpg", LIMIT)
    assert np.abs(cmyk.astype(int) - real_photo.astype(int)).mean() < 6

    grey16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as check:
        assert check.mode.startswith("I")
    loaded16 = load_rgb(tmp_path / "grey16.png", LIMIT)
    assert np.array_equal(loaded16[..., 0], np.asarray(rgb.convert("L")))  # scaled by 1/257, not clipped


def test_alpha_is_composited_over_white(tmp_path, real_photo):
    height, width = real_photo.shape[:2]
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, : width // 2] = 0
    Image.fromarray(np.dstack([real_photo, alpha]), "RGBA").save(tmp_path / "rgba.png")
    out = load_rgb(tmp_path / "rgba.png", LIMIT)
    assert (out[:, : width // 2] == 255).all()
    assert np.array_equal(out[:, width // 2:], real_photo[:, width // 2:])

    palette = Image.fromarray(real_photo).quantize(16)
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    palette.save(tmp_path / "palette.png", transparency=palette.info["transparency"])
    out = load_rgb(tmp_path / "palette.png", LIMIT)
    indices = np.asarray(palette)
    transparent = indices == indices[0, 0]
    assert (out[transparent] == 255).all()
    opaque_colours = np.asarray(palette.convert("RGB"))[~transparent]
    assert np.array_equal(out[~transparent], opaque_colours)


def test_exif_orientation_is_applied(tmp_path, real_photo):
    stored = Image.fromarray(real_photo).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": exif_transpose applies ROTATE_270
    stored.save(tmp_path / "rotated.png", exif=exif)
    assert np.asarray(Image.open(tmp_path / "rotated.png")).shape[:2] == real_photo.shape[1::-1]
    assert np.array_equal(load_rgb(tmp_path / "rotated.png", LIMIT), real_photo)
