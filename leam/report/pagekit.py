"""Helpers the report pages call: read tracked metrics/tables, show tables, state the params used.

Pages only read DVC outputs (``metrics/*.json``, ``data/**.csv``, small PNGs); nothing is recomputed here.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from IPython.display import HTML, Markdown

from leam.io import read_csv_checked, read_json_checked

FLOAT_FORMAT = "{:.4f}"


def repo_root(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params.yaml").is_file() and (candidate / "leam").is_dir():
            return candidate
    raise FileNotFoundError("cannot find the leam repository root (params.yaml) above " + str(here))


ROOT = repo_root()


def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def read_json(relative: str) -> dict | None:
    """A metrics/output JSON file, None when absent; a broken one is a one-line LeamError naming it."""
    path = ROOT / relative
    return read_json_checked(path) if path.is_file() else None


def read_csv(relative: str) -> pd.DataFrame | None:
    """An output table, None when absent (header-only is an empty frame); a broken one is a one-line LeamError."""
    path = ROOT / relative
    return read_csv_checked(path, allow_empty=True) if path.is_file() else None


P_VALUE_FORMAT = "{:.2e}"


def table(frame: pd.DataFrame, float_format: str = FLOAT_FORMAT, caption: str | None = None) -> HTML:
    """A plain HTML table; floats shown with ``float_format`` (the report test parses these numbers).

    p-value columns (``p``, ``p_value``, ``p_vs_*``) use scientific notation: 4 decimals would show 0.0000.
    """
    def is_p(column) -> bool:
        return str(column) in ("p", "p_value") or str(column).startswith("p_vs_")

    formatters = {col: (lambda v, f=(P_VALUE_FORMAT if is_p(col) else float_format): "" if pd.isna(v) else f.format(v))
                  for col in frame.columns if pd.api.types.is_float_dtype(frame[col])}
    body = frame.to_html(index=False, formatters=formatters, border=0, classes="leam-table", escape=True, na_rep="")
    if caption:
        body = body.replace("<thead>", f"<caption>{html.escape(caption)}</caption><thead>", 1)
    return HTML(body)


def params_banner(*keys: str) -> HTML:
    """State the parameter values this page was rendered with (dotted keys into params.yaml)."""
    values = params()
    items = []
    for key in keys:
        node = values
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        items.append(f"<code>{html.escape(key)}</code> = <code>{html.escape(json.dumps(node))}</code>")
    return HTML('<div class="callout">Rendered with ' + ", ".join(items) + "</div>")


def missing(what: str, stage: str) -> Markdown:
    return Markdown(f"*Not available yet: {what}; run `dvc repro {stage}`.*")


def image(relative: str, alt: str = "", width: int | None = None) -> HTML:
    """Inline a PNG from the repository as base64 so the page stays one self-contained file."""
    data = base64.b64encode((ROOT / relative).read_bytes()).decode("ascii")
    size = f' width="{width}"' if width else ""
    return HTML(f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{data}">')


# ------------------------------------------------------------------------------------ selections
def threshold() -> float:
    """The top-level ``threshold`` (fraction of most relevant pixels) the headline tables use."""
    return float(params()["threshold"])


def exists(*relatives: str) -> bool:
    return all((ROOT / relative).exists() for relative in relatives)


def at_threshold(frame: pd.DataFrame, value: float, column: str = "threshold") -> pd.DataFrame:
    """Rows whose ``column`` equals ``value`` up to float noise (thresholds are written as CSV text)."""
    return frame[np.isclose(frame[column].astype(float), float(value))]


def leam_models() -> list[str]:
    """Models of the top-level ``models`` list whose LEAM outputs exist, in params order."""
    return [m for m in params().get("models", []) if exists(f"data/leam/{m}/layers.json")]


def layers_of(model: str) -> list[str] | None:
    """Layer names of a model's stored maps (``data/leam/<model>/layers.json``), ``overall`` last."""
    document = read_json(f"data/leam/{model}/layers.json")
    return None if document is None else list(document["layers"])


def order_layers(frame: pd.DataFrame, model: str, column: str = "layer") -> pd.DataFrame:
    """Sort rows by the model's layer order (input side first, ``overall`` last)."""
    order = layers_of(model) or sorted(frame[column].unique())
    rank = {name: i for i, name in enumerate(order)}
    return frame.assign(_rank=frame[column].map(rank).fillna(len(rank))).sort_values(
        ["_rank"], kind="stable").drop(columns="_rank")


def stale_note(document: dict | None, stage: str) -> Markdown | None:
    """A visible note when a metrics file was computed at another ``threshold`` than params.yaml holds."""
    if document is None or "threshold" not in document:
        return None
    if np.isclose(float(document["threshold"]), threshold()):
        return None
    return Markdown(f"*Note: `{stage}` outputs were computed at threshold {document['threshold']}, params.yaml says "
                    f"{threshold()}: run `dvc repro {stage}`.*")


def ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    """'0.123 [0.100, 0.150]' (mean with its 95% CI) for prose."""
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def readme_section(heading: str) -> str | None:
    """The markdown of one ``## heading`` section of the README (without the heading), or None."""
    path = ROOT / "README.md"
    if not path.is_file():
        return None
    lines, inside, taken = path.read_text(encoding="utf-8").splitlines(), False, []
    for line in lines:
        if line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip().lower() == heading.lower()
            continue
        if inside:
            taken.append(line)
    return "\n".join(taken).strip() or None


def flatten(node, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, JSON value) pairs of a nested params dict, for one table per group."""
    if isinstance(node, dict) and node:
        return [pair for key, value in node.items() for pair in flatten(value, f"{prefix}.{key}" if prefix else str(key))]
    return [(prefix, json.dumps(node))]


def _jpeg_base64(bgr: np.ndarray, quality: int = 85) -> str:
    import cv2

    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode image for the report")
    return base64.b64encode(data.tobytes()).decode("ascii")


def images(relatives: list[str], width: int = 320) -> HTML:
    """Several repository PNGs side by side (wrapping), each with its file stem as caption.

    Photos are re-encoded as JPEG (quality 85) for display so pages stay small; the PNG files are untouched.
    """
    import cv2

    cells = []
    for relative in relatives:
        picture = cv2.imread(str(ROOT / relative), cv2.IMREAD_COLOR)
        if picture is None:
            raise ValueError(f"cannot read {relative} for the report")
        name = html.escape(Path(relative).stem.replace("__", "/"))
        cells.append(f'<figure style="display:inline-block;margin:4px"><img alt="{name}" width="{width}" '
                     f'src="data:image/jpeg;base64,{_jpeg_base64(picture)}"><figcaption>{name}</figcaption></figure>')
    return HTML("<div>" + "".join(cells) + "</div>")


def figure_jpeg(fig, alt: str = "figure", dpi: int = 90, quality: int = 85) -> HTML:
    """A matplotlib figure of photos as an inline JPEG <img> (a PNG of photo tiles is several times larger).

    The figure is closed so the notebook does not show it a second time.
    """
    import io

    import cv2
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    bgr = cv2.imdecode(np.frombuffer(buffer.getvalue(), dtype=np.uint8), cv2.IMREAD_COLOR)
    return HTML(f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{_jpeg_base64(bgr, quality)}">')


def available_regions(correlation_metrics: dict | None) -> list[str] | None:
    """Regions the parser can label (any member class available) plus ``not_labelled``; None = unknown.

    The landmark parser cannot tell hair, ears or background: their shares are 0 by construction, so pages
    leave those columns out rather than show zeros that look like findings.
    """
    from leam.parsing.classes import NOT_LABELLED_NAME, REGIONS

    available = set(((correlation_metrics or {}).get("parser") or {}).get("available") or [])
    if not available:
        return None
    return [region for region, members in REGIONS.items() if available & set(members)] + [NOT_LABELLED_NAME]
