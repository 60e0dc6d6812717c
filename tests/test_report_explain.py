"""The explain page renders from the explain stage's outputs, opens with its answer and shows their numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leam.report.claims import explain_answers
from leam.report.render import render_site
from tests.explain_outputs import write_explain_outputs
from tests.test_report_pages import find_table, html_tables, make_repo


@pytest.fixture(scope="module")
def page(tmp_path_factory, small_slice) -> tuple[Path, dict]:
    photos = [Path(p) for p in small_slice.abspath[:4]]
    reports = make_repo(tmp_path_factory.mktemp("repo"), photos, pages=["explain.qmd"])
    tables = write_explain_outputs(reports.parent)
    render_site(reports, renderer="fallback")
    return reports / "_site" / "explain.html", tables


def test_the_page_opens_with_its_answer_then_a_figure_and_shows_the_aucs(page):
    html, tables = page
    text = html.read_text()
    answer = text.index('class="answer-block"')
    assert answer < text.index("<img") and answer < text.index("<table")
    shown = html_tables(html)
    ranking = find_table(shown, "alpha: AUC per method").set_index("method")
    auc = tables["auc"]
    own = auc[(auc.source == "alpha") & (auc.target == "alpha")].set_index(["curve", "method"])
    for method in ranking.index:
        assert float(ranking.loc[method, "deletion mean"]) == pytest.approx(own.loc[("deletion", method), "mean"], abs=5e-5)
        assert int(ranking.loc[method, "insertion rank"]) == own.loc[("insertion", method), "rank"]
    assert list(ranking.index)[0] == "saliency"  # the steepest synthetic deletion ranks first
    assert "LEAM loses" in text and "saliency" in text  # the page says where LEAM loses
    assert "separates <code>leam:overall</code> from <code>leam_opposes:overall</code> in 4 of 4" in text
    transfer = find_table(shown, "judged by another network")
    assert "deletion alpha→beta" in transfer.columns


def test_the_answer_block_follows_the_metrics(page):
    html, _ = page
    metrics = json.loads((html.parents[2] / "metrics" / "explain.json").read_text())
    answers = explain_answers(metrics)
    assert {a.key for a in answers} == {"explain.deletion", "explain.insertion", "explain.signs"}
    deletion = next(a for a in answers if a.key == "explain.deletion" and a.model == "alpha")
    assert deletion.extra["winner"] == "saliency" and "saliency" in deletion.extra["better"]
    rows = find_table(html_tables(html), "Answer:")
    assert len(rows) == len(answers) and set(rows.model) == {"alpha", "beta"}
    leam = metrics["models"]["alpha"]["deletion"]["auc"]["leam:overall"]["mean"]
    assert f"{leam:.4f}" in rows[(rows.model == "alpha")]["our figure (95% CI)"].iloc[0]
