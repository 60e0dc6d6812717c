"""The fallback renderer executes .qmd cells and writes self-contained HTML (tiny generated projects)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from leam.errors import LeamError
from leam.report.qmd import parse_qmd
from leam.report.render import render_site


def test_parse_qmd_splits_front_matter_markdown_and_cells_with_options():
    text = textwrap.dedent("""\
        ---
        title: "Regions"
        execute:
          echo: true
        ---

        Intro **text**.

        ```{python}
        #| label: tbl-shares
        #| echo: false
        #| fig-cap: "Class shares"
        x = 1
        ```

        Outro.
        """)
    doc = parse_qmd(text)
    assert doc.front_matter == {"title": "Regions", "execute": {"echo": True}}
    assert [c.kind for c in doc.cells] == ["markdown", "code", "markdown"]
    code = doc.cells[1]
    assert code.options == {"label": "tbl-shares", "echo": False, "fig-cap": "Class shares"}
    assert code.source == "x = 1"


@pytest.mark.parametrize("text, message", [
    ("---\ntitle: x\n", "never closed"),
    ("```{python}\nx = 1\n", "never closed"),
    ("---\ntitle: [\n---\n", "bad YAML"),
])
def test_parse_qmd_rejects_malformed_pages(text, message):
    with pytest.raises(LeamError, match=message):
        parse_qmd(text, name="bad.qmd")


def _project(tmp_path: Path, page: str) -> Path:
    (tmp_path / "_quarto.yml").write_text(
        "project: {type: website, output-dir: _site}\n"
        "website: {title: T, navbar: {left: [{href: a.qmd, text: Alpha}]}}\n"
        "execute: {echo: false}\n")
    (tmp_path / "a.qmd").write_text(page)
    return tmp_path


def test_fallback_render_executes_cells_and_inlines_figures(tmp_path):
    page = textwrap.dedent("""\
        ---
        title: "Alpha page"
        ---

        Some *markdown*.

        ```{python}
        #| fig-cap: "A line"
        import matplotlib.pyplot as plt
        import pandas as pd
        plt.plot([0, 1], [0, 2]); plt.show()
        pd.DataFrame({"value": [0.123456]}).to_html()
        ```

        ```{python}
        #| echo: true
        #| output: false
        print("hidden output")
        ```
        """)
    renderer, files = render_site(_project(tmp_path, page), renderer="fallback")
    assert renderer == "fallback"
    html = files[0].read_text()
    assert "<title>Alpha page" in html and "<em>markdown</em>" in html
    assert "data:image/png;base64," in html and "<figcaption>A line</figcaption>" in html
    assert "0.123456" in html
    assert 'print(&quot;hidden output&quot;)' in html and "hidden output</pre>" not in html
    assert "import matplotlib" not in html  # echo: false from _quarto.yml
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network


def test_fallback_render_turns_a_failing_cell_into_one_error(tmp_path):
    page = "---\ntitle: x\n---\n\n```{python}\nraise ValueError('boom in cell')\n```\n"
    with pytest.raises(LeamError, match="boom in cell"):
        render_site(_project(tmp_path, page), renderer="fallback")


def test_render_rejects_unknown_renderer_and_missing_project(tmp_path):
    with pytest.raises(LeamError, match="_quarto.yml"):
        render_site(tmp_path)
    with pytest.raises(LeamError, match="choose one of"):
        render_site(_project(tmp_path, "x"), renderer="pandoc")
