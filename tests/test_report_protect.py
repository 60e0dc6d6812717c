"""The protect page renders from the protect stage's outputs, opens with the three answers and shows their numbers."""

from __future__ import annotations

import html as html_lib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leam.report.claims import protect_answers
from leam.report.render import render_site
from tests.test_report_pages import find_table, html_tables, make_repo


@pytest.fixture(scope="module")
def page(tmp_path_factory, small_slice) -> Path:
    photos = [Path(p) for p in small_slice.abspath[:4]]
    reports = make_repo(tmp_path_factory.mktemp("repo"), photos, pages=["protect.qmd"])
    render_site(reports, renderer="fallback")
    return reports / "_site" / "protect.html"


def test_the_page_opens_with_one_answer_per_question_in_words(page):
    text = page.read_text()
    blocks = [i for i in range(len(text)) if text.startswith('class="answer-block"', i)]
    assert len(blocks) == 3 and blocks[-1] < text.index("<img") and blocks[-1] < text.index("<table")
    assert text.index('data-claims="protect.where"') < text.index('data-claims="protect.what"') \
        < text.index('data-claims="protect.person"')
    metrics = json.loads((page.parents[2] / "metrics/protect.json").read_text())
    answers = protect_answers(metrics)
    assert len(answers) == 6
    for answer in answers:  # every sentence, with its numbers and CIs, is on the page
        assert html_lib.escape(answer.extra["sentence"]) in text
    where = next(a for a in answers if a.key == "protect.where" and a.extra["role"] == "sources")
    own = metrics["where"]["optimised-leam_overall-b0.05-e16"]["sources"]["verification_success"]
    assert where.reason == "own LEAM map (overall) wins: its CI lies above every other's"  # made so in the data
    assert f"own LEAM map (overall) {own['mean']:.3f} [{own['ci'][0]:.3f}, {own['ci'][1]:.3f}]" in text


def test_the_tables_show_the_numbers_of_the_protect_outputs(page):
    root = page.parents[2]
    summary = pd.read_csv(root / "data/protect/summary.csv")
    tables = html_tables(page)
    where = find_table(tables, "Question where")
    row = where[(where.protection == "random face pixels") & (where.network == "gamma")].iloc[0]
    expected = summary[(summary.condition == "optimised-random_face-b0.05-e16") & (summary.network == "gamma")
                       & (summary.measure == "verification_success")].iloc[0]
    assert [float(row[c]) for c in ("verification", "CI low", "CI high")] == pytest.approx(
        [expected["mean"], expected.ci_low, expected.ci_high], abs=5e-5)
    pooled = where[(where.network == "pooled")]
    assert set(pooled.role) == {"sources", "held-out"} and len(pooled) == 2 * 5  # 5 locations x 2 roles
    assert list(find_table(tables, "Question what").protection.unique()) == [
        "the optimised perturbation", "black pixels", "random noise", "a blur"]
    visibility = pd.read_csv(root / "data/protect/visibility.csv")
    shown = find_table(tables, "Visibility per condition").set_index("condition")
    mean = visibility[visibility.condition == "black-leam_overall-b0.05"].psnr.mean()
    assert float(shown.loc["black-leam_overall-b0.05", "psnr"]) == pytest.approx(mean, abs=5e-5)
    assert len(find_table(tables, "Paired Wilcoxon")) == len(pd.read_csv(root / "data/protect/tests.csv"))
    assert np.isfinite(_floats(find_table(tables, "Every number behind the answers")["mean"])).all()


def _floats(column) -> np.ndarray:
    return column.astype(float).to_numpy()

