"""Render the Quarto website under ``reports/``: with ``quarto`` when it is installed, else with a fallback.

The fallback executes the same ``.qmd`` pages' Python cells in a Jupyter kernel (nbclient) and writes one
self-contained HTML file per page (figures inlined as base64 PNG, CSS inline, no network resources), with the
navigation bar taken from ``_quarto.yml``. A failing cell fails the render: a broken report is an error.

Quarto structure kept by the fallback: a cell's ``fig-cap`` becomes ``<figure>`` + ``<figcaption>``, its
``fig-alt`` the ``alt`` of each figure it draws; callouts (``::: {.callout-note}``, ``-tip``, ``-warning``,
``-important``, ``-caution``) become boxes with their ``title`` attribute (or first heading) as title, and
``collapse="true"`` / ``"false"`` makes them ``<details>`` (closed / open), as Quarto's collapsible callouts;
any other fenced div becomes a ``<div>`` with its id and classes.
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert.filters.markdown_mistune import markdown2html_mistune

from leam.errors import LeamError
from leam.io import write_text_atomic
from leam.report.qmd import Cell, parse_qmd

log = logging.getLogger("leam.report")

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;line-height:1.5}
nav{background:#24292f;padding:.6rem 1.2rem;position:sticky;top:0}
nav a{color:#e6edf3;margin-right:1.1rem;text-decoration:none;font-size:.95rem}
nav a.active{font-weight:700;border-bottom:2px solid #e6edf3}
main{max-width:1100px;margin:0 auto;padding:1rem 1.5rem 3rem}
h1{font-size:1.9rem;margin-bottom:.2rem}
.subtitle{color:#57606a;margin-top:0}
table{border-collapse:collapse;margin:.8rem 0;font-size:.88rem}
th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:right}
th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.85rem}
img{max-width:100%}
figcaption{color:#57606a;font-size:.9rem;margin:.2rem 0 1rem}
.cell-output{margin:.4rem 0}
.callout{border-left:4px solid #0969da;background:#ddf4ff;padding:.5rem .9rem;margin:.8rem 0}
.callout-note{border-left-color:#0969da;background:#f6f8fa}
.callout-tip{border-left-color:#1a7f37;background:#f0fff4}
.callout-warning,.callout-caution{border-left-color:#9a6700;background:#fff8c5}
.callout-important{border-left-color:#cf222e;background:#ffebe9}
.callout-title,details.callout>summary{font-weight:600;margin:.1rem 0 .3rem;cursor:default}
details.callout>summary{cursor:pointer}
figure{margin:.6rem 0 1rem}
.answer-block table{font-size:.85rem}
.answer-block td{vertical-align:top}
.answer-block th,.answer-block td{text-align:left}
.verdict{font-weight:700;white-space:nowrap}
.verdict-agree{color:#1a7f37}.verdict-partly{color:#9a6700}.verdict-disagree{color:#cf222e}.verdict-none{color:#57606a}
"""


def quarto_available() -> bool:
    return shutil.which("quarto") is not None


def render_site(reports_dir: str | os.PathLike, renderer: str = "auto", timeout_s: int = 900) -> tuple[str, list[Path]]:
    """Render every page listed in ``_quarto.yml``; returns (renderer used, written HTML files)."""
    reports_dir = Path(reports_dir).resolve()
    config = _load_config(reports_dir)
    if renderer not in ("auto", "quarto", "fallback"):
        raise LeamError(f"report.renderer={renderer!r} is not valid; choose one of: auto, quarto, fallback")
    use_quarto = renderer == "quarto" or (renderer == "auto" and quarto_available())
    if use_quarto:
        if not quarto_available():
            raise LeamError("report.renderer=quarto but `quarto` is not on PATH; use auto or fallback")
        env = _kernel_env(reports_dir)
        result = subprocess.run(["quarto", "render", str(reports_dir)], env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["unknown error"]
            raise LeamError(f"quarto render failed: {tail[0]}")
        out_dir = reports_dir / config.get("project", {}).get("output-dir", "_site")
        return "quarto", sorted(out_dir.glob("*.html"))
    return "fallback", render_fallback(reports_dir, config, timeout_s=timeout_s)


def _load_config(reports_dir: Path) -> dict:
    config_path = reports_dir / "_quarto.yml"
    if not config_path.is_file():
        raise LeamError(f"not a Quarto project: {config_path} is missing")
    return yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}


def _pages(reports_dir: Path, config: dict) -> list[tuple[str, str]]:
    """(file, nav text) for each page of the navbar, in order; falls back to every .qmd file."""
    entries = config.get("website", {}).get("navbar", {}).get("left", [])
    pages = []
    for entry in entries:
        if isinstance(entry, str):
            pages.append((entry, Path(entry).stem))
        elif isinstance(entry, dict) and "href" in entry:
            pages.append((entry["href"], entry.get("text", Path(entry["href"]).stem)))
    if not pages:
        pages = [(p.name, p.stem) for p in sorted(reports_dir.glob("*.qmd"))]
    missing = [name for name, _ in pages if not (reports_dir / name).is_file()]
    if missing:
        raise LeamError(f"_quarto.yml lists page(s) that do not exist: {', '.join(missing)}")
    return pages


def _kernel_env(reports_dir: Path) -> dict:
    """The kernel's environment: the pages import the installed ``leam`` (no path tricks), so check it is."""
    try:
        importlib.metadata.distribution("leam")
    except importlib.metadata.PackageNotFoundError:
        raise LeamError("the report pages import the installed package: run `pip install -e .` "
                        f"(or `make venv`) before rendering {reports_dir}") from None
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return env


def render_fallback(reports_dir: Path, config: dict, timeout_s: int = 900, workers: int | None = None) -> list[Path]:
    """Execute and write every page; ``workers`` pages at a time (default: one per core, at most 4).

    Each page runs in its own Jupyter kernel, so pages share no state and a page's time is mostly its
    kernel's start and imports: running two or more at once divides the wall time on a multi-core machine.
    Pages are written in navbar order whatever order they finish in.
    """
    out_dir = reports_dir / config.get("project", {}).get("output-dir", "_site")
    out_dir.mkdir(parents=True, exist_ok=True)
    defaults = dict(config.get("execute", {}) or {})
    site_title = config.get("website", {}).get("title", "Report")
    pages = _pages(reports_dir, config)
    workers = max(1, min(len(pages), workers or min(os.cpu_count() or 1, 4)))
    previous_env = dict(os.environ)
    os.environ.update(_kernel_env(reports_dir))
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            texts = list(pool.map(lambda page: render_page(reports_dir / page[0], pages, site_title, defaults,
                                                           timeout_s), pages))
    finally:
        os.environ.clear()
        os.environ.update(previous_env)
    written = []
    for (page, _), html_text in zip(pages, texts):
        target = out_dir / (Path(page).stem + ".html")
        write_text_atomic(target, html_text)
        written.append(target)
        log.info("rendered %s", target)
    return written


def render_page(path: Path, pages: list[tuple[str, str]], site_title: str, defaults: dict, timeout_s: int = 900) -> str:
    document = parse_qmd(path.read_text(encoding="utf-8"), name=path.name)
    options = {**defaults, **(document.front_matter.get("execute") or {})}
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    content = [cell for cell in document.cells if cell.kind in ("code", "markdown")]
    for cell in content:
        if cell.kind == "code":
            notebook.cells.append(nbformat.v4.new_code_cell(cell.source))
        else:
            notebook.cells.append(nbformat.v4.new_markdown_cell(cell.source))
    client = NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:] or ["cell failed"]
        raise LeamError(f"{path.name}: a cell failed: {last[0]}") from None
    body = _render_body(document.cells, dict(zip(map(id, content), notebook.cells)), options)
    title = document.front_matter.get("title", path.stem)
    subtitle = document.front_matter.get("subtitle")
    active = ' class="active"'
    nav = "".join(
        f'<a href="{html.escape(Path(page).stem)}.html"{active if page == path.name else ""}>{html.escape(text)}</a>'
        for page, text in pages
    )
    header = f"<h1>{html.escape(str(title))}</h1>" + (f'<p class="subtitle">{html.escape(str(subtitle))}</p>' if subtitle else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta name=\"generator\" content=\"leam.report fallback renderer\">"
        f"<title>{html.escape(str(title))} – {html.escape(site_title)}</title><style>{_STYLE}</style></head>"
        f"<body><nav>{nav}</nav><main>{header}{''.join(body)}</main></body></html>\n"
    )


_CALLOUTS = ("callout-note", "callout-tip", "callout-warning", "callout-important", "callout-caution")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def _render_body(cells: list[Cell], executed: dict, page_options: dict) -> list[str]:
    """HTML of the page's cells in order; fenced divs open and close around what they enclose.

    ``executed`` maps ``id(cell)`` of each code cell to its executed notebook cell.
    """
    body: list[str] = []
    closers: list[str] = []
    index = 0
    while index < len(cells):
        cell = cells[index]
        index += 1
        if cell.kind == "div":
            title = (cell.options.get("attributes") or {}).get("title")
            following = cells[index] if index < len(cells) else None
            if title is None and following is not None and following.kind == "markdown":
                first, _, rest = following.source.lstrip("\n").partition("\n")
                heading = _HEADING.match(first)
                if heading and _is_callout(cell.options):  # Quarto: a callout's first heading is its title
                    title = heading.group(1)
                    cells = [*cells[:index], Cell("markdown", rest, following.options), *cells[index + 1:]]
            opening, closing = _open_div(cell.options, title)
            body.append(opening)
            closers.append(closing)
        elif cell.kind == "enddiv":
            body.append(closers.pop())
        elif cell.kind == "code":
            body.append(_render_cell(cell, executed[id(cell)], page_options))
        elif cell.source.strip():
            body.append(markdown2html_mistune(cell.source))
    return body


def _is_callout(options: dict) -> bool:
    return any(name in _CALLOUTS for name in options.get("classes") or [])


def _open_div(options: dict, title: str | None) -> tuple[str, str]:
    """(opening, closing) HTML of a fenced div: a callout box, a ``<details>`` callout, or a plain div."""
    classes = list(options.get("classes") or [])
    ident = options.get("id")
    anchor = f' id="{html.escape(ident)}"' if ident else ""
    if not _is_callout(options):
        names = f' class="{html.escape(" ".join(classes))}"' if classes else ""
        return f"<div{anchor}{names}>", "</div>"
    names = html.escape(" ".join(["callout", *classes]))
    collapse = str((options.get("attributes") or {}).get("collapse", "")).lower()
    if collapse in ("true", "false"):  # collapsible: closed (true) or open (false), as Quarto
        state = " open" if collapse == "false" else ""
        return (f'<details{anchor} class="{names}"{state}><summary>{html.escape(title or "Details")}</summary>',
                "</details>")
    header = f'<div class="callout-title">{html.escape(title)}</div>' if title else ""
    return f'<div{anchor} class="{names}">{header}', "</div>"


def _render_cell(cell: Cell, executed, page_options: dict) -> str:
    if cell.kind == "markdown":
        return markdown2html_mistune(cell.source)
    options = {**page_options, **cell.options}
    parts = []
    if options.get("echo", True) is True:
        parts.append(f'<pre><code class="language-python">{html.escape(cell.source)}</code></pre>')
    caption = options.get("fig-cap")
    alt = options.get("fig-alt") or caption or "figure"
    outputs = []
    if options.get("output", True) is not False:
        for output in executed.get("outputs", []):
            outputs.append(_render_output(output, show_warnings=options.get("warning", True) is not False,
                                          alt=str(alt)))
    label = options.get("label")
    anchor = f' id="{html.escape(str(label))}"' if label else ""
    if caption:
        figure = "".join(outputs) + f"<figcaption>{_inline_markdown(str(caption))}</figcaption>"
        return f'<div class="cell"{anchor}>{"".join(parts)}<figure>{figure}</figure></div>'
    return f'<div class="cell"{anchor}>{"".join(parts)}{"".join(outputs)}</div>'


def _inline_markdown(text: str) -> str:
    """Markdown of one line (a caption: Quarto reads ``fig-cap`` as markdown) as HTML without the <p>."""
    rendered = markdown2html_mistune(text).strip()
    if rendered.startswith("<p>") and rendered.endswith("</p>") and rendered.count("<p>") == 1:
        rendered = rendered[3:-4]
    return rendered


def _render_output(output, show_warnings: bool, alt: str = "figure") -> str:
    kind = output.get("output_type")
    if kind == "stream":
        if output.get("name") == "stderr" and not show_warnings:
            return ""
        return f'<pre class="cell-output">{html.escape(output.get("text", ""))}</pre>'
    if kind in ("display_data", "execute_result"):
        data = output.get("data", {})
        if "text/html" in data:
            return f'<div class="cell-output">{data["text/html"]}</div>'
        if "image/png" in data:
            payload = data["image/png"].replace("\n", "")
            base64.b64decode(payload[:64] + "=" * (-len(payload[:64]) % 4))  # fail early on a corrupt image
            return f'<div class="cell-output"><img alt="{html.escape(alt)}" src="data:image/png;base64,{payload}"></div>'
        if "image/svg+xml" in data:
            return f'<div class="cell-output">{data["image/svg+xml"]}</div>'
        if "text/markdown" in data:
            return f'<div class="cell-output">{markdown2html_mistune(data["text/markdown"])}</div>'
        if "text/plain" in data:
            return f'<pre class="cell-output">{html.escape(data["text/plain"])}</pre>'
    return ""


if __name__ == "__main__":  # pragma: no cover - convenience for `python -m leam.report.render reports`
    used, files = render_site(sys.argv[1] if len(sys.argv) > 1 else "reports")
    print(used, *files, sep="\n")
