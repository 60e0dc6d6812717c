"""Robust loading of photographs into plain 8-bit RGB arrays.

Photos scraped from the web are messy: truncated downloads, HTML error pages saved as ``.jpg``, CMYK
press photos, palette PNGs with transparency, 16-bit scans, phone pictures whose pixels are stored
sideways with an EXIF orientation tag, and the occasional decompression bomb. :func:`load_rgb` turns
every one of them into either an ``(H, W, 3) uint8`` RGB array or an :class:`ImageDiscard` whose
``reason`` is a short code the align stage counts (``missing``, ``not_an_image``, ``too_large``,
``unreadable``).

Policies (documented here because they change pixels):

- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), so the array is upright as a viewer
  shows it.
- Transparency (RGBA, LA, PA, palette with a transparent index) is composited over **white**, as a
  browser shows the picture on a white page; a transparent background therefore never looks like a
  black face-shaped hole.
- 16-bit greyscale (``I;16*``/``I``) is scaled by 1/257 (65535 -> 255) rather than clipped;
  float images (``F``) in 0..1 are scaled by 255, others clipped to 0..255.
- CMYK and YCbCr go through Pillow's own conversion (no ICC colour management).
- Multi-frame files (GIF, TIFF) give their first frame.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from leam.errors import LeamError

DISCARD_REASONS = ("missing", "not_an_image", "too_large", "unreadable")


class ImageDiscard(LeamError):
    """An input image that is skipped and counted, not a fatal error.

    ``reason`` is a short code for ``discards.csv`` (e.g. ``unreadable``, ``no_face``); the message is
    one line ``<reason>: <detail>``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)

    def __reduce__(self):  # keep picklable across worker processes
        return (type(self), (self.reason, self.detail))


def _header(path: Path) -> Image.Image:
    """Open lazily (header only): Pillow reads the size without decoding pixels."""
    if not path.is_file():
        raise ImageDiscard("missing", f"no such file {path}")
    try:
        with warnings.catch_warnings():
            # our own max_pixels check replaces Pillow's warning; its hard limit still raises below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageDiscard("too_large", f"{path.name}: {exc}") from None
    except UnidentifiedImageError:
        raise ImageDiscard("not_an_image", f"{path.name} is not a recognised image format") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow uses SyntaxError for some broken headers
        raise ImageDiscard("unreadable", f"{path.name}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any decoded Pillow mode to (H, W, 3) uint8 following the module's policies."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        if mode == "I" and values.max(initial=0) <= 255:  # 8-bit data stored in a 32-bit container
            grey = values
        else:
            grey = values / 257.0
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite_max = np.nanmax(values) if values.size else 0.0
        scale = 255.0 if finite_max <= 1.0 else 1.0
        grey = np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        over_white = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(over_white), 0, 255).astype(np.uint8)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def load_rgb(path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    """Decode ``path`` into an upright RGB array ``(H, W, 3) uint8``.

    ``max_pixels`` (width x height of the stored image) is checked from the header before any pixel
    is decoded, so a decompression bomb costs nothing. Raises :class:`ImageDiscard` with reason
    ``missing``, ``not_an_image``, ``too_large`` or ``unreadable`` (corrupt or truncated data,
    unsupported pixel format, broken EXIF).
    """
    path = Path(path)
    image = _header(path)
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageDiscard("unreadable", f"{path.name} has an empty size {width}x{height}")
        if width * height > max_pixels:
            raise ImageDiscard("too_large", f"{path.name} is {width}x{height} pixels, over max_pixels={max_pixels}")
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return np.ascontiguousarray(_to_rgb(upright))
        except (OSError, ValueError, SyntaxError, KeyError, IndexError, TypeError, EOFError) as exc:
            raise ImageDiscard("unreadable", f"{path.name}: {_one_line(exc)}") from None
