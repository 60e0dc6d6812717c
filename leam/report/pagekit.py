"""Helpers the report pages call: read tracked metrics/tables, show tables, state the params used.

Pages only read DVC outputs (``metrics/*.json``, ``data/**.csv``, small PNGs); nothing is recomputed here.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd
import yaml
from IPython.display import HTML, Markdown

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
    path = ROOT / relative
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_csv(relative: str) -> pd.DataFrame | None:
    path = ROOT / relative
    return pd.read_csv(path) if path.is_file() else None


def table(frame: pd.DataFrame, float_format: str = FLOAT_FORMAT, caption: str | None = None) -> HTML:
    """A plain HTML table; floats shown with ``float_format`` (the report test parses these numbers)."""
    formatters = {col: (lambda v, f=float_format: "" if pd.isna(v) else f.format(v))
                  for col in frame.columns if pd.api.types.is_float_dtype(frame[col])}
    body = frame.to_html(index=False, formatters=formatters, border=0, classes="leam-table", escape=True)
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
    return Markdown(f"*{what} is not available yet: run `dvc repro {stage}`.*")


def image(relative: str, alt: str = "", width: int | None = None) -> HTML:
    """Inline a PNG from the repository as base64 so the page stays one self-contained file."""
    data = base64.b64encode((ROOT / relative).read_bytes()).decode("ascii")
    size = f' width="{width}"' if width else ""
    return HTML(f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{data}">')
