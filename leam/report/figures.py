"""Plot helpers of the report pages: LEAM overlays on aligned faces and the few chart types the pages draw.

Display only: maps are read raw from ``data/leam`` and normalised here for viewing (each map divided by its
own maximum, so every tile uses the full colour range; absolute magnitudes are not comparable between tiles).
Charts take the tidy tables the stages write and return a matplotlib Figure; pages call ``plt.show()``.
Where the paper gives a value or range for what a chart shows, the chart draws it (grey band or line,
labelled "paper"), so our figure and the paper's can be compared at a glance.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

PAPER_COLOUR = "#6e7781"
VERDICT_COLOURS = {"agree": "#1a7f37", "partly": "#bf8700", "disagree": "#cf222e", "no paper figure": "#8c959f"}

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
    fig, ax = plt.subplots(figsize=(min(1.6 + 0.95 * cols, 13.0), 0.4 + 0.95 * rows), dpi=90, layout="constrained")
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
    return fig


def share_heatmap(shares: pd.DataFrame, title: str = "", ylabel: str = "layer", ax: plt.Axes | None = None
                  ) -> plt.Figure:
    """Heatmap of a (rows x parts) table of shares of the top-t pixels (fractions, annotated), or of any
    non-negative values per part (e.g. CVs); draws into ``ax`` when given."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 + 0.62 * shares.shape[1], 0.9 + 0.42 * shares.shape[0]), dpi=90)
    else:
        fig = ax.figure
    sns.heatmap(shares.astype(float), annot=True, fmt=".2f", cmap="rocket_r", vmin=0, cbar=False, ax=ax,
                annot_kws={"fontsize": 7})
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def _facet_grid(table: pd.DataFrame, facets: list, hue: str, max_cols: int, panel_height: float):
    """(figure, axes (rows, cols), hue values in order, hue -> colour) for one panel per facet, wrapped after
    ``max_cols`` panels, sharing the y axis."""
    cols = min(len(facets), max_cols)
    rows = -(-len(facets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(min(4.4 * cols, 13), panel_height * rows + 0.3), dpi=90,
                             squeeze=False, sharey=True)
    hues = list(dict.fromkeys(table[hue]))
    return fig, axes, hues, dict(zip(hues, sns.color_palette("tab10", len(hues))))


def mean_ci_lines(table: pd.DataFrame, x: str, hue: str, facet: str | None = None, ylabel: str = "",
                  logx: bool = True, hline: tuple[float, float] | None = None,
                  bands: list[tuple[float, float, str]] | None = None,
                  points: list[tuple[float, float, str]] | None = None, xticklabels: str | None = None,
                  xlabel: str | None = None, styles: dict | None = None, max_cols: int = 3) -> plt.Figure:
    """Mean with 95% CI band (columns ``mean``, ``ci_low``, ``ci_high``) against ``x``, one line per ``hue``.

    bands: (low, high, label) horizontal bands, e.g. the paper's range; points: (x, y, label) markers, e.g. the
    paper's values; xticklabels: a column naming each ``x`` (e.g. layer names at their depth); styles: per hue
    value, extra ``plot`` keywords (e.g. ``{"linestyle": "--"}``). Facets wrap after ``max_cols`` panels.
    """
    facets = [None] if facet is None else list(dict.fromkeys(table[facet]))
    fig, axes, hues, palette = _facet_grid(table, facets, hue, max_cols, panel_height=3.1)
    band_colours = sns.color_palette("pastel", max(len(bands or []), 1))
    flat = axes.ravel()
    for ax, value in zip(flat, facets):
        part = table if value is None else table[table[facet] == value]
        for name, group in part.groupby(hue, sort=False):
            group = group.sort_values(x)
            ax.plot(group[x], group["mean"], marker="o", ms=3, label=str(name), color=palette[name],
                    **(styles or {}).get(name, {}))
            ax.fill_between(group[x], group["ci_low"], group["ci_high"], alpha=0.2, color=palette[name])
        if hline is not None:
            ax.axhspan(*hline, color="grey", alpha=0.15, lw=0)
        for (low, high, label), colour in zip(bands or [], band_colours):
            ax.axhspan(low, high, color=colour, alpha=0.45, lw=0, label=label, zorder=0)
        for (px, py, label), marker in zip(points or [], ["*", "X", "P", "D"]):
            ax.plot([px], [py], marker=marker, ms=10, color="black", ls="none", label=label, zorder=5)
        if logx:
            ax.set_xscale("log")
        if xticklabels is not None:
            ticks = part.drop_duplicates(x).sort_values(x)
            ax.set_xticks(ticks[x], ticks[xticklabels].astype(str), fontsize=7, rotation=35, ha="right")
        ax.set_xlabel(x if xlabel is None else xlabel)
        ax.set_title("" if value is None else str(value), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in flat[len(facets):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(ylabel)
    handles, labels = flat[0].get_legend_handles_labels()
    for ax in flat[1:len(facets)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    ncol = min(len(labels), 8)
    fig.legend(handles, labels, fontsize=7, loc="upper center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.22 * -(-len(labels) // ncol) / (3.1 * axes.shape[0] + 0.3)))
    return fig


def pair_violins(scores: pd.DataFrame, value_label: str = "BC", x: str = "layer", ax: plt.Axes | None = None
                 ) -> plt.Figure:
    """Violins of pair scores per ``x`` (a layer, or a model), split by pair type (columns ``x``,
    ``pair_type``, ``value``); draws into ``ax`` when given."""
    layers = list(dict.fromkeys(scores[x]))
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(1.4 + 1.1 * len(layers), 13), 3.2), dpi=90)
    else:
        fig = ax.figure
    sns.violinplot(data=scores, x=x, y="value", hue="pair_type", hue_order=["same", "different"],
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


# ------------------------------------------------------------------------------------ answer figures
def _errorbar(ax: plt.Axes, y: float, mean: float, low: float | None, high: float | None, **kwargs) -> None:
    low = mean if low is None or not np.isfinite(low) else low
    high = mean if high is None or not np.isfinite(high) else high
    ax.errorbar([mean], [y], xerr=[[max(mean - low, 0.0)], [max(high - mean, 0.0)]], capsize=3, ms=6,
                lw=1.2, **kwargs)


def claims_forest(answers: list, models: list[str] | None = None) -> plt.Figure:
    """The paper's claims against this run, one panel per claim: our means with 95% CIs per model (rows),
    the paper's range as a shaded band or its value as a dashed line, each model's verdict at the right.

    ``answers``: :class:`leam.report.claims.Answer` objects; panels for ``regions.nose``, ``patterns.bc`` and
    the occlusion claims (LEAM and every random baseline in one panel; the verdict shown is the paper's own
    control, ``random_uniform``).
    """
    panels = [("regions.nose", "Nose share of the top-t pixels"), ("patterns.bc", "BC of the overall maps"),
              ("occlusion.random_uniform", "Drop in cosine similarity, source = target")]
    present = [p for p in panels if any(a.key == p[0] for a in answers)]
    if models is None:
        models = list(dict.fromkeys(a.model for a in answers))
    fig, axes = plt.subplots(1, max(len(present), 1), figsize=(min(4.6 * max(len(present), 1), 13.5),
                                                               1.5 + 0.45 * len(models)), dpi=90, squeeze=False)
    colours = sns.color_palette("tab10", 6)
    markers = ["o", "s", "D", "^", "v", "P"]
    for ax, (key, title) in zip(axes[0], present):
        group = [a for a in answers if (a.key.startswith("occlusion.random") if key.startswith("occlusion")
                                        else a.key == key)]
        estimates: dict[str, dict] = {}
        for a in group:
            for estimate in a.estimates:
                estimates.setdefault(estimate.quantity, {})[a.model] = estimate
        quantities = list(estimates)
        offsets = np.linspace(-0.2, 0.2, len(quantities)) if len(quantities) > 1 else [0.0]
        papers: dict[str, tuple[tuple[float, float], int]] = {}
        for qi, quantity in enumerate(quantities):
            for mi, model in enumerate(models):
                estimate = estimates[quantity].get(model)
                if estimate is None:
                    continue
                _errorbar(ax, len(models) - 1 - mi + offsets[qi], estimate.mean, estimate.ci_low, estimate.ci_high,
                          fmt=markers[qi % len(markers)], color=colours[qi], label=quantity if mi == 0 else None)
                if estimate.paper is not None:
                    tag = "random" if quantity.startswith("random") else quantity.replace(" drop", "")
                    papers.setdefault(tag, (estimate.paper, qi))
        for tag, ((low, high), qi) in papers.items():
            colour = PAPER_COLOUR if tag == "random" else colours[qi]
            if high > low:
                ax.axvspan(low, high, color=colour, alpha=0.15, lw=0, label=f"paper: {tag} {low:g}-{high:g}")
            else:
                ax.axvline(low, color=colour, ls="--", lw=1.2, label=f"paper: {tag} {low:g}")
        verdicts = {a.model: a.verdict for a in answers if a.key == key}
        for mi, model in enumerate(models):
            if model in verdicts:
                ax.annotate(verdicts[model], xy=(1.02, len(models) - 1 - mi), xycoords=("axes fraction", "data"),
                            fontsize=8, color=VERDICT_COLOURS.get(verdicts[model], "black"), va="center",
                            weight="bold", annotation_clip=False)
        ax.set_yticks(range(len(models)), list(reversed(models)), fontsize=8)
        ax.set_ylim(-0.6, len(models) - 0.4)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout(w_pad=4.0)
    return fig


def region_bars(rows: pd.DataFrame, parts: list[str], band: tuple[float, float] | None = None,
                band_part: str = "nose", xlabel: str = "share of the top-t pixels") -> plt.Figure:
    """Mean region shares with 95% CIs, one bar per model in each region (columns ``model``, ``part``,
    ``mean``, ``ci_low``, ``ci_high``), and the paper's range for ``band_part`` drawn over its bars."""
    models = list(dict.fromkeys(rows["model"]))
    height = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(8.5, 0.8 + 0.32 * len(parts) * max(len(models), 2) * 0.6), dpi=90)
    colours = sns.color_palette("tab10", len(models))
    for mi, (model, colour) in enumerate(zip(models, colours)):
        part = rows[rows.model == model].set_index("part").reindex(parts)
        y = np.arange(len(parts)) + (mi - (len(models) - 1) / 2) * height
        low = (part["mean"] - part["ci_low"]).clip(lower=0).fillna(0).to_numpy()
        high = (part["ci_high"] - part["mean"]).clip(lower=0).fillna(0).to_numpy()
        ax.barh(y, part["mean"].fillna(0), height, color=colour, label=model, xerr=np.vstack([low, high]),
                capsize=2, error_kw={"lw": 0.8})
    if band is not None and band_part in parts:
        at = parts.index(band_part)
        ax.add_patch(matplotlib.patches.Rectangle((band[0], at - 0.45), band[1] - band[0], 0.9, facecolor="none",
                                                  edgecolor="black", hatch="///", lw=1.0, zorder=4,
                                                  label=f"paper: {band_part} {band[0]:g}-{band[1]:g}"))
    ax.set_yticks(np.arange(len(parts)), parts, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def paired_gender(table: pd.DataFrame, panel: str = "measure", line: str = "model", ylabels: dict | None = None,
                  max_cols: int = 4) -> plt.Figure:
    """Women vs men as paired plots: per ``panel`` value one axes, per ``line`` value one line from the
    women's mean to the men's (95% CI whiskers). Columns: ``panel``, ``line``, ``gender`` (female/male),
    ``mean``, ``ci_low``, ``ci_high``."""
    panels = list(dict.fromkeys(table[panel]))
    cols = min(len(panels), max_cols)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(min(3.3 * cols, 13), 3.0 * rows), dpi=90, squeeze=False)
    lines = list(dict.fromkeys(table[line]))
    colours = dict(zip(lines, sns.color_palette("tab10", len(lines))))
    flat = axes.ravel()
    for ax, name in zip(flat, panels):
        part = table[table[panel] == name]
        for key, group in part.groupby(line, sort=False):
            group = group.set_index("gender").reindex(["female", "male"])
            xs = np.array([0.0, 1.0]) + (lines.index(key) - (len(lines) - 1) / 2) * 0.04
            ax.plot(xs, group["mean"], marker="o", ms=4, color=colours[key], label=str(key))
            ax.errorbar(xs, group["mean"], yerr=np.vstack([(group["mean"] - group["ci_low"]).clip(lower=0),
                                                           (group["ci_high"] - group["mean"]).clip(lower=0)]),
                        fmt="none", ecolor=colours[key], capsize=2, lw=0.8)
        ax.set_xticks([0, 1], ["women", "men"])
        ax.set_xlim(-0.4, 1.4)
        ax.set_title(str(name), fontsize=9)
        ax.set_ylabel((ylabels or {}).get(name, ""), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="upper center", ncol=min(len(labels), 6), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (3.0 * rows)))
    return fig


def verdict_grid(decide, directions: list[tuple[str | None, str]], magnitudes: list[tuple[list[str], str]]
                 ) -> plt.Figure:
    """The verdict rule as a coloured grid: rows = direction outcomes, columns = magnitude outcomes, each
    cell the verdict ``decide(direction, magnitudes)`` returns (so the figure is the rule the code applies)."""
    fig, ax = plt.subplots(figsize=(6.4, 0.7 + 0.5 * len(directions)), dpi=90)
    for ri, (outcome, row_label) in enumerate(directions):
        for ci, (values, _) in enumerate(magnitudes):
            verdict = decide(outcome, values)
            ax.add_patch(matplotlib.patches.Rectangle((ci, ri), 1, 1, facecolor=VERDICT_COLOURS[verdict],
                                                      alpha=0.85, edgecolor="white", lw=2))
            ax.text(ci + 0.5, ri + 0.5, verdict, ha="center", va="center", color="white", fontsize=10,
                    weight="bold")
    ax.set_xlim(0, len(magnitudes))
    ax.set_ylim(len(directions), 0)
    ax.set_xticks(np.arange(len(magnitudes)) + 0.5, [label for _, label in magnitudes], fontsize=8)
    ax.set_yticks(np.arange(len(directions)) + 0.5, [label for _, label in directions], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    return fig


def facet_bars(table: pd.DataFrame, x: str, hue: str, facet: str, ylabel: str = "",
               band: tuple[float, float, str] | None = None, band_x: str | None = None, max_cols: int = 3
               ) -> plt.Figure:
    """Grouped bars of ``mean`` with whiskers ``ci_low``..``ci_high`` (e.g. a person vs everyone), one panel per
    ``facet`` value; ``band`` = (low, high, label) drawn as a hatched box over the ``band_x`` group."""
    facets = list(dict.fromkeys(table[facet]))
    fig, axes, hues, colours = _facet_grid(table, facets, hue, max_cols, panel_height=3.0)
    width = 0.8 / max(len(hues), 1)
    flat = axes.ravel()
    for ax, name in zip(flat, facets):
        part = table[table[facet] == name]
        xs = list(dict.fromkeys(part[x]))
        for offset, key in enumerate(hues):
            rows_of = part[part[hue] == key].set_index(x).reindex(xs)
            positions = np.arange(len(xs)) + (offset - (len(hues) - 1) / 2) * width
            low = (rows_of["mean"] - rows_of["ci_low"]).clip(lower=0).fillna(0).to_numpy()
            high = (rows_of["ci_high"] - rows_of["mean"]).clip(lower=0).fillna(0).to_numpy()
            ax.bar(positions, rows_of["mean"].fillna(0), width, color=colours[key], label=str(key),
                   yerr=np.vstack([low, high]), capsize=2, error_kw={"lw": 0.8})
        if band is not None and band_x in xs:
            at = xs.index(band_x)
            ax.add_patch(matplotlib.patches.Rectangle((at - 0.45, band[0]), 0.9, band[1] - band[0], facecolor="none",
                                                      edgecolor="black", hatch="///", lw=1.0, zorder=4,
                                                      label=band[2]))
        ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs], fontsize=7, rotation=30, ha="right")
        ax.set_title(str(name), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in flat[len(facets):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(ylabel)
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="upper center", ncol=min(len(labels), 6), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (3.0 * axes.shape[0] + 0.3)))
    return fig


def photo_strip(faces: np.ndarray, labels: list[str], title: str = "", cols: int = 6) -> plt.Figure:
    """Photos (N, T, T, 3) uint8 in rows of ``cols``, each labelled below, without axes or colour bar."""
    rows = -(-len(faces) // cols)
    cols = min(cols, len(faces))
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.85 * rows + (0.3 if title else 0)), dpi=90,
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, face, label in zip(axes.ravel(), faces, labels):
        ax.imshow(face)
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
