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
from leam.report.claims import NO_VERDICT

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


# ------------------------------------------------------------------------------------ answer blocks
def answers() -> list:
    """Every answer of this run (:mod:`leam.report.claims`), from ``metrics/*.json``; the region shares' CIs
    from ``data/correlation/shares_summary.csv`` and the transfer CIs from ``data/occlusion/summary.csv`` at
    the threshold the metrics were computed at."""
    from leam.report import claims

    correlation = read_json("metrics/correlation.json")
    shares = read_csv("data/correlation/shares_summary.csv")
    cis = claims.region_cis(shares, correlation["threshold"]) if correlation and shares is not None else {}
    return claims.all_answers(correlation, read_json("metrics/similarity.json"), read_json("metrics/occlusion.json"),
                              read_json("metrics/variability.json"), cis, read_csv("data/occlusion/summary.csv"))


def _verdict_html(verdict: str) -> str:
    css = {"agree": "agree", "partly": "partly", "disagree": "disagree"}.get(verdict, "none")
    return f'<span class="verdict verdict-{css}">{html.escape(verdict)}</span>'


def _tally(items: list) -> str:
    """'agree for 3 of 5 models (a, b, c); partly for 2 (d, e)' of one claim's answers."""
    by_verdict: dict[str, list[str]] = {}
    for item in items:
        by_verdict.setdefault(item.verdict, []).append(item.model)
    parts = [f"{verdict} for {len(models)} of {len(items)} ({', '.join(models)})" if i == 0
             else f"{verdict} for {len(models)} ({', '.join(models)})"
             for i, (verdict, models) in enumerate(sorted(by_verdict.items(), key=lambda kv: -len(kv[1])))]
    return "; ".join(parts)


def answer_block(items: list, question: str, stage: str, digits: int = 3, note: str | None = None) -> HTML:
    """The answer block that opens a page: the question, the paper's claim(s), our figure(s) with CIs per
    model, the verdict of :data:`leam.report.claims.VERDICT_RULE` (linked to the methods page) and why.

    ``items``: answers of one page (:func:`answers` filtered); ``stage``: what to rerun when there are none.
    """
    if not items:
        return HTML(f'<div class="answer-block"><p><strong>Question.</strong> {html.escape(question)}</p>'
                    f"<p><em>Not available yet: run <code>dvc repro {html.escape(stage)}</code>.</em></p></div>")
    keys = list(dict.fromkeys(item.key for item in items))
    models = list(dict.fromkeys(item.model for item in items))
    items = sorted(items, key=lambda item: (keys.index(item.key), models.index(item.model)))
    lines = []
    for key in keys:
        group = [item for item in items if item.key == key]
        claim = group[0].claim
        tally = _tally(group) if group[0].verdict != NO_VERDICT else ""
        lines.append(f"<li><strong>{html.escape(claim.title)}.</strong> {_markdown_inline(claim.statement)}"
                     + (f" <strong>This run:</strong> {html.escape(tally)}." if tally else "") + "</li>")
    many = len(keys) > 1
    judged = any(item.verdict != NO_VERDICT for item in items)  # else: the paper gives no figure to judge by
    head = "".join(f"<th>{name}</th>" for name in (["model"] + (["claim"] if many else []) + ["our figure (95% CI)"]
                                                    + (["paper", "verdict"] if judged else []) + ["why"]))
    rows = []
    for item in items:
        cells = [html.escape(item.model)] + ([html.escape(item.claim.title)] if many else [])
        cells.append(html.escape(item.figures_text(digits)))
        if judged:
            cells += [html.escape(item.claim.paper), _verdict_html(item.verdict)]
        cells.append(html.escape(item.reason))
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    threshold_value = next((item.threshold for item in items if item.threshold is not None), None)
    at = f" (top {threshold_value:g} of the pixels)" if threshold_value is not None else ""
    sources = sorted({e.source.split(" ")[0] for item in items for e in item.estimates if e.source})
    footer = (('Verdict rule: <a href="methods.html#verdict-rule">Methods</a>. ' if judged else
               "The paper gives no figure here: each row gives the direction of the comparison. ")
              + "Numbers from "
              + ", ".join(f"<code>{html.escape(s)}</code>" for s in sources) + "."
              + (f" {html.escape(note)}" if note else ""))
    return HTML(
        f'<div class="answer-block" data-claims="{html.escape(" ".join(keys))}">'
        f"<p><strong>Question.</strong> {html.escape(question)}{html.escape(at)}</p><ul>{''.join(lines)}</ul>"
        f'<table class="answer"><caption>Answer: {html.escape(question)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table><p class=\"answer-rule\">{footer}</p></div>")


def answer_sentences(items: list, question: str, stage: str, note: str | None = None) -> HTML:
    """An answer block in words: the question, then one sentence per answer (``extra["sentence"]``, with its
    numbers and CIs), for checks the paper gives no figure for (:func:`leam.report.claims.protect_answers`)."""
    if not items:
        return answer_block([], question, stage)
    keys = " ".join(dict.fromkeys(item.key for item in items))
    sources = sorted({e.source.split(" ")[0] for item in items for e in item.estimates if e.source})
    lines = "".join(f"<li>{_markdown_inline(item.extra['sentence'])}</li>" for item in items)
    footer = ("Means with 95 % bootstrap CIs; <em>CIs apart</em> = the two intervals do not overlap. Numbers from "
              + ", ".join(f"<code>{html.escape(s)}</code>" for s in sources) + "."
              + (f" {html.escape(note)}" if note else ""))
    return HTML(f'<div class="answer-block" data-claims="{html.escape(keys)}"><p><strong>Question.</strong> '
                f"{html.escape(question)}</p><ul>{lines}</ul><p class=\"answer-rule\">{footer}</p></div>")


def _markdown_inline(text: str) -> str:
    """Escape ``text`` and turn `code` spans into <code> (claim statements use backticks for names)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def claims_summary(items: list, models: list[str] | None = None) -> HTML:
    """The overview's table of the paper's claims against this run: claims (rows) x models (columns), each
    cell the verdict and our figures; the paper's figures in the second column."""
    from leam.report.claims import PAPER

    items = [item for item in items if item.key in PAPER]
    if models is None:
        models = list(dict.fromkeys(item.model for item in items))
    cells = {(item.key, item.model): item for item in items}
    head = "".join(f"<th>{html.escape(name)}</th>" for name in ["claim", "paper", *models])
    rows = []
    for key, claim in PAPER.items():
        if not any((key, model) in cells for model in models):
            continue
        row = [f'<a href="{claim.page}.html">{html.escape(claim.title)}</a>', html.escape(claim.paper)]
        for model in models:
            item = cells.get((key, model))
            if item is None:
                row.append("")
                continue
            digits = 4 if key.startswith("occlusion") else 3
            figures = " vs ".join(f"{e.mean:.{digits}f}" for e in item.estimates)
            row.append(f"{_verdict_html(item.verdict)}<br><small>{html.escape(figures)}</small>")
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return HTML(f'<div class="answer-block" data-claims="{html.escape(" ".join(dict.fromkeys(cells_key for cells_key, _ in cells)))}">'
                f'<table class="answer claims-summary"><caption>The paper\'s claims against this run</caption>'
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def claims_numbers(items: list) -> HTML:
    """Every number behind the answers, one row per figure: mean, CI, the paper's range, verdict, source."""
    rows = []
    for item in items:
        for estimate in item.estimates:
            low, high = estimate.paper if estimate.paper is not None else (float("nan"), float("nan"))
            rows.append({"claim": item.key, "model": item.model, "figure": estimate.quantity,
                         "mean": float(estimate.mean),
                         "CI low": float("nan") if estimate.ci_low is None else float(estimate.ci_low),
                         "CI high": float("nan") if estimate.ci_high is None else float(estimate.ci_high),
                         "paper low": float(low), "paper high": float(high), "verdict": item.verdict,
                         "source": estimate.source})
    if not rows:
        return HTML("")
    return table(pd.DataFrame(rows), caption="Every number behind the answers (means, 95% CIs, the paper's range)")
