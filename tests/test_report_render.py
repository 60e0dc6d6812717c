"""The fallback renderer executes .qmd cells and writes self-contained HTML (tiny generated projects)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from leam.errors import LeamError
from leam.report.qmd import parse_qmd
from leam.report.render import _kernel_env, render_site


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


def test_parse_qmd_reads_fenced_divs_and_leaves_fenced_code_alone():
    text = textwrap.dedent("""\
        ::: {.callout-note #tables collapse="true" title='Tables of x'}
        ## Heading
        ```{python}
        x = 1
        ```
        ::: inner
        text
        :::
        :::

        ```bash
        :::
        ```
        """)
    doc = parse_qmd(text)
    assert [c.kind for c in doc.cells] == ["div", "markdown", "code", "div", "markdown", "enddiv", "enddiv", "markdown"]
    assert doc.cells[0].options == {"classes": ["callout-note"], "id": "tables",
                                    "attributes": {"collapse": "true", "title": "Tables of x"}}
    assert doc.cells[3].options["classes"] == ["inner"]
    assert doc.cells[-1].source == "```bash\n:::\n```"  # a ::: line inside a code fence is text


@pytest.mark.parametrize("text, message", [
    ("::: {.callout-note}\ntext\n", "never closed"),
    ("text\n:::\n", "closes no fenced div"),
])
def test_parse_qmd_rejects_unbalanced_divs(text, message):
    with pytest.raises(LeamError, match=message):
        parse_qmd(text, name="bad.qmd")


def test_fallback_renders_callouts_collapsible_sections_and_figure_alt_text(tmp_path):
    page = textwrap.dedent("""\
        ---
        title: "Beta"
        ---

        ::: {.callout-tip title="Answer"}
        The answer.
        :::

        ```{python}
        #| fig-cap: "A line: look at the `slope`"
        #| fig-alt: "A rising straight line"
        import matplotlib.pyplot as plt
        plt.plot([0, 1], [0, 2]); plt.show()
        ```

        ::: {.callout-note collapse="true"}
        ## Tables
        ```{python}
        print("table here")
        ```
        :::

        ::: {.callout-warning collapse="false" title="Open"}
        Shown.
        :::

        ::: {#anchor .answer-block}
        Plain.
        :::
        """)
    html = render_site(_project(tmp_path, page), renderer="fallback")[1][0].read_text()
    assert '<div class="callout callout-tip"><div class="callout-title">Answer</div><p>The answer.</p>' in html
    assert '<img alt="A rising straight line" src="data:image/png;base64,' in html
    assert "<figcaption>A line: look at the <code>slope</code></figcaption></figure>" in html
    assert '<details class="callout callout-note"><summary>Tables</summary>' in html
    assert "table here" in html and "<h2>Tables</h2>" not in html  # the first heading became the title
    assert '<details class="callout callout-warning" open><summary>Open</summary>' in html
    assert '<div id="anchor" class="answer-block"><p>Plain.</p>' in html
    assert html.index("The answer.") < html.index("data:image/png") < html.index("table here")


def test_report_pages_import_the_installed_package_not_a_path_insert():
    pages = sorted((Path(__file__).resolve().parents[1] / "reports").glob("*.qmd"))
    assert pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "sys.path" not in text and "PYTHONPATH" not in text, page.name
    assert _kernel_env(Path("reports")).get("PYTHONPATH") == os.environ.get("PYTHONPATH")
