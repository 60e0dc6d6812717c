"""Plot helpers of the report pages: LEAM overlays on aligned faces and the few chart types the pages draw.

Display only: maps are read raw from ``data/leam`` and normalised here for viewing (each map divided by its
own maximum, so every tile uses the full colour range; absolute magnitudes are not comparable between tiles).
Charts take the tidy tables the stages write and return a matplotlib Figure; pages call ``plt.show()``.
"""

from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

DISPLAY_NORMALISATION = "per-map max (each tile divided by its own maximum; colours are not comparable across tiles)"


def normalise_per_map(maps: np.ndarray) -> np.ndarray:
    """(N, G, G) raw maps -> float32 in [0, 1], each divided by its own maximum (negative values clipped).

    A map without positive mass stays all zero instead of dividing by zero.
    """
    maps = np.clip(np.asarray(maps, dtype=np.float32), 0.0, None)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    scale = np.where(peak > 0, peak, 1.0).astype(np.float32)
    return maps / scale[:, None, None]


def resize_batch(images: np.ndarray, size: int, mode: str = "area") -> np.ndarray:
    """Resize a batch (N, H, W) or (N, H, W, C) to ``size`` x ``size`` in one torch call; float32 out.

    torch is imported here, not at module level: only the gallery needs it and pages start faster without it.
    """
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    channels_last = tensor.ndim == 4
    tensor = tensor.permute(0, 3, 1, 2) if channels_last else tensor[:, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(tensor, size=(size, size), mode=mode, **kwargs)
    out = out.permute(0, 2, 3, 1) if channels_last else out[:, 0]
    return out.numpy()


def overlays(frames: np.ndarray, maps: np.ndarray, size: int = 96, alpha: float = 0.5,
             cmap: str = "turbo") -> np.ndarray:
    """Alpha-blend colour-mapped LEAM maps over their aligned faces, batched.

    frames: uint8 (N, S, S, 3) analysis frames; maps: raw (N, G, G) maps in the same frame.
    Returns uint8 (N, size, size, 3): (1 - alpha) * face + alpha * colormap(map / max(map)).
    """
    faces = resize_batch(frames, size, mode="area")
    heat = resize_batch(normalise_per_map(maps), size, mode="bilinear").clip(0.0, 1.0)
    colours = matplotlib.colormaps[cmap](heat)[..., :3] * 255.0
    return np.round((1.0 - alpha) * faces + alpha * colours).clip(0, 255).astype(np.uint8)


def mosaic(tiles: np.ndarray, rows: int, cols: int, gap: int = 2) -> np.ndarray:
    """Tile (rows * cols, T, T, 3) uint8 images row-major into one (rows*(T+gap)-gap, cols*(T+gap)-gap, 3) image."""
    count, side = tiles.shape[0], tiles.shape[1]
    if count != rows * cols:
        raise ValueError(f"mosaic needs {rows * cols} tiles, got {count}")
    canvas = np.full((rows * (side + gap) - gap, cols * (side + gap) - gap, 3), 255, dtype=np.uint8)
    step = side + gap
    for index in range(count):
        r, c = divmod(index, cols)
        canvas[r * step:r * step + side, c * step:c * step + side] = tiles[index]
    return canvas


def gallery_figure(tiles: np.ndarray, row_labels: list[str], col_labels: list[str], title: str = "",
                   cmap: str = "turbo") -> plt.Figure:
    """One labelled figure of a (rows, cols) grid of tiles, uint8 (rows, cols, T, T, 3), with a colour bar."""
    rows, cols, side = tiles.shape[0], tiles.shape[1], tiles.shape[2]
    gap = 2
    image = mosaic(tiles.reshape(rows * cols, side, side, 3), rows, cols, gap)
    step = side + gap
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.95 * cols, 13.0), 0.4 + 0.95 * rows), dpi=90)
    ax.imshow(image)
    ax.set_yticks([r * step + side / 2 for r in range(rows)], row_labels, fontsize=8)
    ax.set_xticks([c * step + side / 2 for c in range(cols)], col_labels, fontsize=7, rotation=30, ha="right")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=cmap)
    fig.colorbar(mappable, ax=ax, fraction=0.025, pad=0.01, label="relevance / map max")
    fig.tight_layout()
    return fig


def share_heatmap(shares: pd.DataFrame, title: str = "") -> plt.Figure:
    """Heatmap of a (layers x parts) table of shares of the top-t pixels (fractions, annotated)."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.62 * shares.shape[1], 0.9 + 0.42 * shares.shape[0]), dpi=90)
    sns.heatmap(shares.astype(float), annot=True, fmt=".2f", cmap="rocket_r", vmin=0, cbar=False, ax=ax,
                annot_kws={"fontsize": 7})
    ax.set_xlabel("")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def mean_ci_lines(table: pd.DataFrame, x: str, hue: str, facet: str | None = None, ylabel: str = "",
                  logx: bool = True, hline: tuple[float, float] | None = None) -> plt.Figure:
    """Mean with 95% CI band (columns ``mean``, ``ci_low``, ``ci_high``) against ``x``, one line per ``hue``."""
    facets = [None] if facet is None else list(dict.fromkeys(table[facet]))
    fig, axes = plt.subplots(1, len(facets), figsize=(min(4.2 * len(facets), 13), 3.2), dpi=90, squeeze=False,
                             sharey=True)
    palette = dict(zip(dict.fromkeys(table[hue]), sns.color_palette("tab10", table[hue].nunique())))
    for ax, value in zip(axes[0], facets):
        part = table if value is None else table[table[facet] == value]
        for name, group in part.groupby(hue, sort=False):
            group = group.sort_values(x)
            ax.plot(group[x], group["mean"], marker="o", ms=3, label=str(name), color=palette[name])
            ax.fill_between(group[x], group["ci_low"], group["ci_high"], alpha=0.2, color=palette[name])
        if hline is not None:
            ax.axhspan(*hline, color="grey", alpha=0.15, lw=0)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_title("" if value is None else str(value), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def pair_violins(scores: pd.DataFrame, value_label: str = "BC") -> plt.Figure:
    """Violins of pair scores per layer, split by pair type (columns ``layer``, ``pair_type``, ``value``)."""
    layers = list(dict.fromkeys(scores["layer"]))
    fig, ax = plt.subplots(figsize=(min(1.4 + 1.1 * len(layers), 13), 3.2), dpi=90)
    sns.violinplot(data=scores, x="layer", y="value", hue="pair_type", hue_order=["same", "different"],
                   split=True, inner="quart", cut=0, density_norm="width", ax=ax, order=layers, linewidth=0.8)
    ax.set_ylabel(value_label)
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    ax.legend(fontsize=8, title=None, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def matrix_heatmap(matrix: pd.DataFrame, title: str = "", fmt: str = ".3f", cbar_label: str = "") -> plt.Figure:
    """Annotated heatmap of a square-ish matrix (e.g. occlusion transfer: rows source, columns target)."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.0 * matrix.shape[1], 1.0 + 0.6 * matrix.shape[0]), dpi=90)
    sns.heatmap(matrix.astype(float), annot=True, fmt=fmt, cmap="viridis", ax=ax,
                cbar_kws={"label": cbar_label}, annot_kws={"fontsize": 8})
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def grouped_bars(table: pd.DataFrame, x: str, hue: str, ylabel: str = "", title: str = "") -> plt.Figure:
    """Bars of ``mean`` with 95% CI whiskers (``ci_low``/``ci_high``), grouped by ``x``, coloured by ``hue``."""
    xs, hues = list(dict.fromkeys(table[x])), list(dict.fromkeys(table[hue]))
    width = 0.8 / max(len(hues), 1)
    fig, ax = plt.subplots(figsize=(min(1.5 + 0.9 * len(xs) * max(len(hues), 1) * 0.5, 13), 3.2), dpi=90)
    colours = sns.color_palette("tab10", len(hues))
    for offset, (name, colour) in enumerate(zip(hues, colours)):
        part = table[table[hue] == name].set_index(x).reindex(xs)
        positions = np.arange(len(xs)) + (offset - (len(hues) - 1) / 2) * width
        low = (part["mean"] - part["ci_low"]).clip(lower=0).to_numpy()
        high = (part["ci_high"] - part["mean"]).clip(lower=0).to_numpy()
        ax.bar(positions, part["mean"], width, color=colour, label=str(name),
               yerr=np.vstack([low, high]), capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs], fontsize=8, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
