"""The report pages render from the stages' outputs and show exactly their numbers.

A tiny but consistent set of outputs (two models, two layers + overall, three thresholds) is written into a
temporary repository beside a copy of ``reports/``; the pages are rendered with the fallback renderer and the
HTML tables are parsed back and compared with the metrics files. Photos in the gallery and the example
PNGs are real faces of the sample (resized, not aligned: the pages only display them).
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from leam.report.render import render_site
from tests.browser import check_page, chromium_paths
from tests.explain_outputs import write_explain_outputs
from tests.protect_outputs import write_protect_outputs

REPO = Path(__file__).resolve().parents[1]
MODELS = ["alpha", "beta"]
LAYERS = ["l1", "l2", "overall"]
THRESHOLDS = [0.01, 0.05, 1.0]
CLASS_PARTS = ["nose", "skin", "left_eye", "right_eye", "not_labelled"]
REGION_PARTS = ["nose", "eyes", "brows", "mouth", "skin", "not_labelled"]
KINDS = ["leam", "random_uniform", "random_face"]


# ------------------------------------------------------------------------------------------ HTML tables
class _Tables(HTMLParser):
    """Collect every <table> as (caption, header cells, body rows of cell texts)."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "caption":
            self._in_caption = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "caption":
            self._in_caption = False
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1]["rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_caption and self.tables:
            self.tables[-1]["caption"] += data
        elif self._cell is not None:
            self._cell.append(data)


def html_tables(path: Path) -> dict[str, pd.DataFrame]:
    """{caption: DataFrame of strings} of one rendered page (first row = header)."""
    parser = _Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return {t["caption"].strip(): pd.DataFrame(t["rows"][1:], columns=t["rows"][0]) for t in parser.tables if t["rows"]}


def find_table(tables: dict[str, pd.DataFrame], *words: str) -> pd.DataFrame:
    hits = [caption for caption in tables if all(word in caption for word in words)]
    assert len(hits) == 1, f"expected one table with {words}, got {hits} among {list(tables)}"
    return tables[hits[0]]


# ------------------------------------------------------------------------------------ synthetic outputs
def _ci_rows(rng, keys: dict, low: float = 0.0, high: float = 1.0) -> dict:
    mean = float(rng.uniform(low, high))
    return {**keys, "n": 12, "mean": mean, "std": 0.05, "ci_low": mean - 0.02, "ci_high": mean + 0.02}


def write_outputs(root: Path, photos: list[Path], threshold: float = 0.01) -> None:
    """Consistent outputs of every stage the pages read; metrics JSON derived from the CSVs at ``threshold``
    with the stages' own functions (``metrics_document``, ``headline``), so they have the stages' shape."""
    from leam.io import json_safe
    from leam.metrics.correlation import metrics_document
    from leam.metrics.similarity import headline as similarity_headline
    from leam.occlusion import headline as occlusion_headline

    rng = np.random.default_rng(7)
    (root / "metrics").mkdir()
    data = root / "data"
    for folder in ("aligned", "correlation", "similarity", "variability", "occlusion/examples", "parsing/examples"):
        (data / folder).mkdir(parents=True)
    json.dump({"identities": 2, "images": 5, "kept": 4, "kept_identities": 2, "discarded": 1,
               "discarded_by_reason": {"no_face": 1},
               "by_gender": {"female": {"identities": 1, "images": 3, "kept": 2, "discarded": 1},
                             "male": {"identities": 1, "images": 2, "kept": 2, "discarded": 0}}},
              open(root / "metrics/data.json", "w"))
    json.dump({m: {"images": 4, "pairs_same": 2, "pairs_different": 4, "auc_cosine": float(rng.uniform(0.8, 1)),
                   "auc_euclidean": float(rng.uniform(0.8, 1)), "mean_cosine_same": float(rng.uniform(0.5, 0.9)),
                   "mean_cosine_different": float(rng.uniform(0, 0.4)), "threshold": 0.6,
                   "accuracy": float(rng.uniform(0.7, 1)), "balanced_accuracy": float(rng.uniform(0.7, 1)),
                   **{g: {"pairs_same": 1, "pairs_different": 1, "auc_cosine": float(rng.uniform(0.8, 1)),
                          "mean_cosine_same": 0.7, "mean_cosine_different": 0.2} for g in ("female", "male")}}
               for m in MODELS}, open(root / "metrics/models.json", "w"))

    # aligned photos and LEAM maps for the gallery: 2 identities x 2 photos, real faces resized to 112 px
    frames = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (112, 112), interpolation=cv2.INTER_AREA)
                       for p in photos[:4]])
    np.save(data / "aligned/frames.npy", frames)
    ids = ["ann/1", "ann/2", "bob/1", "bob/2"]
    pd.DataFrame({"row": range(4), "image_id": ids, "identity": [i.split("/")[0] for i in ids],
                  "gender": ["female", "female", "male", "male"]}).to_csv(data / "aligned/index.csv", index=False)
    yy, xx = np.mgrid[0:16, 0:16]
    for model in MODELS:
        folder = data / "leam" / model
        folder.mkdir(parents=True)
        centres = rng.uniform(3, 13, size=(4, len(LAYERS), 2))
        maps = np.exp(-((xx - centres[..., :1, None]) ** 2 + (yy - centres[..., 1:, None]) ** 2) / 8.0)
        np.save(folder / "maps.npy", maps.astype(np.float16))
        json.dump({"model": model, "layers": LAYERS, "grid": 16, "frame_size": 112, "sign": "supports_match",
                   "negative_activations": "relu", "reference": "baseline"}, open(folder / "layers.json", "w"))
        pd.DataFrame({"row": range(4), "image_id": ids, "identity": [i.split("/")[0] for i in ids],
                      "gender": ["female", "female", "male", "male"], "reference_image_id": ids[1:] + ids[:1],
                      "cosine": 0.9}).to_csv(folder / "meta.csv", index=False)
    for index, photo in enumerate(photos[:3]):
        face = cv2.resize(cv2.imread(str(photo)), (96, 96), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(data / f"parsing/examples/p__{index}.png"), np.concatenate([face, face[:, ::-1]], axis=1))
        cv2.imwrite(str(data / f"occlusion/examples/p__{index}.png"), np.concatenate([face] * 3, axis=1))

    # correlate
    summary, by_gender, enrichment = [], [], []
    for model in MODELS:
        for layer in LAYERS:
            for t in THRESHOLDS:
                for level, parts in (("class", CLASS_PARTS), ("region", REGION_PARTS)):
                    for part in parts:
                        keys = {"model": model, "layer": layer, "threshold": t, "level": level, "part": part}
                        summary.append(_ci_rows(rng, keys, 0.0, 0.6))
                        enrichment.append({**keys, "mean_share": summary[-1]["mean"], "mean_area": 0.1, "n": 12,
                                           "enrichment": summary[-1]["mean"] / 0.1})
                        for gender in ("female", "male"):
                            by_gender.append(_ci_rows(rng, {**keys, "gender": gender}, 0.0, 0.6))
    summary = pd.DataFrame(summary).round(6)
    summary.to_csv(data / "correlation/shares_summary.csv", index=False)
    pd.DataFrame(by_gender).round(6).to_csv(data / "correlation/shares_by_gender.csv", index=False)
    pd.DataFrame(enrichment).round(6).to_csv(data / "correlation/enrichment.csv", index=False)
    document = metrics_document(summary, threshold, {m: {"images": 4, "no_parser_labels": 0, "maps_without_mass": 0,
                                                         "layers": LAYERS} for m in MODELS})
    document["parser"] = {"backend": "landmarks", "available": ["nose", "skin", "left_eye", "right_eye"]}
    json.dump(json_safe(document), open(root / "metrics/correlation.json", "w"))

    # similarity
    rows, tests, gender_rows, scores, pairs = [], [], [], [], []
    for model in MODELS:
        pairs += [{"model": model, "pair_id": i, "pair_type": "same" if i < 6 else "different"} for i in range(12)]
        for layer in LAYERS:
            for t in THRESHOLDS:
                metrics = ["bc", "emd"] if layer == "overall" and t == 0.01 else ["bc"]
                for metric in metrics:
                    keys = {"model": model, "layer": layer, "threshold": t, "metric": metric}
                    for pair_type, (lo, hi) in (("same", (0.3, 0.6)), ("different", (0.0, 0.2))):
                        rows.append(_ci_rows(rng, {**keys, "pair_type": pair_type}, lo, hi))
                        for group in ("female", "male", "female-female", "male-male"):
                            gender_rows.append(_ci_rows(rng, {**keys, "pair_type": pair_type, "gender_group": group}))
                    for gender in ("all", "female", "male"):
                        tests.append({**keys, "gender": gender, "n_same": 6, "n_different": 6, "mannwhitney_u": 30.0,
                                      "p_value": float(rng.uniform(0, 0.1)), "rank_biserial": float(rng.uniform(0, 1)),
                                      "cohens_d": 1.0, "same_more_similar": True})
                    scores += [{"model": model, "layer": layer, "threshold": t, "metric": metric, "pair_id": i,
                                "value": float(rng.uniform(0.3, 0.6) if i < 6 else rng.uniform(0, 0.2))}
                               for i in range(12)]
    summary_sim = pd.DataFrame(rows)
    summary_sim.to_csv(data / "similarity/summary.csv", index=False)
    pd.DataFrame(gender_rows).to_csv(data / "similarity/by_gender.csv", index=False)
    pd.DataFrame(tests).to_csv(data / "similarity/tests.csv", index=False)
    pd.DataFrame(scores).to_csv(data / "similarity/scores.csv", index=False)
    pd.DataFrame(pairs).to_csv(data / "similarity/pairs.csv", index=False)
    tests_sim = pd.DataFrame(tests)
    json.dump(json_safe({"threshold": threshold, "models": {
        m: {"n_maps": 4, "n_same_pairs": 6, "n_different_pairs": 6,
            "layers": similarity_headline(summary_sim, tests_sim, m, threshold)} for m in MODELS}}),
        open(root / "metrics/similarity.json", "w"))

    # variability
    rows, tests = [], []
    for model in MODELS:
        for layer in LAYERS:
            for t, measure, level, part in [(0.01, "map_cv", "map", np.nan), (0.01, "map_cv_weighted", "map", np.nan),
                                            (1.0, "map_cv", "map", np.nan), (1.0, "map_cv_weighted", "map", np.nan),
                                            *[(0.01, "share_cv", "region", p) for p in REGION_PARTS],
                                            *[(0.01, "share_cv", "class", p) for p in CLASS_PARTS]]:
                keys = {"model": model, "layer": layer, "threshold": t, "measure": measure, "level": level, "part": part}
                for gender in ("all", "female", "male"):
                    rows.append(_ci_rows(rng, {**keys, "gender": gender}, 0.2, 1.5))
                tests.append({**keys, "n_female": 1, "n_male": 1, "mannwhitney_u": 1.0, "p_value": 1.0,
                              "rank_biserial": 0.0, "cohens_d": np.nan})
    variability = pd.DataFrame(rows)
    variability.to_csv(data / "variability/summary.csv", index=False)
    pd.DataFrame(tests).to_csv(data / "variability/tests.csv", index=False)
    document = {"threshold": threshold, "models": {}}  # the variability stage's metrics_document shape
    for (model, layer), part in variability.groupby(["model", "layer"], sort=False):
        cv = part[(part.measure == "map_cv") & np.isclose(part.threshold, 0.01)].set_index("gender")
        entry = {"map_cv_top": {g: {"mean": cv.loc[g, "mean"], "ci": [cv.loc[g, "ci_low"], cv.loc[g, "ci_high"]],
                                    "n": int(cv.loc[g, "n"])} for g in ("all", "female", "male")}}
        entry["map_cv_top"]["female_vs_male_p"] = 1.0
        shares = part[(part.measure == "share_cv") & (part.gender == "all") & (part.level == "region")]
        entry["share_cv_region"] = dict(zip(shares.part, shares["mean"]))
        document["models"].setdefault(model, {})[layer] = entry
    json.dump(json_safe(document), open(root / "metrics/variability.json", "w"))
    pd.DataFrame([{"model": m, "layer": layer, "identity": person, "gender": g, "level": "region", "part": part,
                   "n_images": 2, "mean_share": float(rng.uniform(0, 0.6)), "std_share": 0.05, "cv": 0.3}
                  for m in MODELS for layer in LAYERS for person, g in (("ann", "female"), ("bob", "male"))
                  for part in REGION_PARTS]).to_csv(data / "variability/shares_per_identity.csv", index=False)
    pd.DataFrame([{"model": m, "layer": layer, "threshold": 0.01, "identity": person, "gender": g, "n_images": 2,
                   "n_cells": 100, "map_cv": float(rng.uniform(0.5, 2)), "map_cv_weighted": 0.5}
                  for m in MODELS for layer in LAYERS for person, g in (("ann", "female"), ("bob", "male"))]
                 ).to_csv(data / "variability/per_identity.csv", index=False)

    # occlusion: source = target rows for LEAM, source none for random baselines, plus transfer rows
    rows, tests, gender_rows = [], [], []
    for target in MODELS:
        for t in (0.01, 0.05):
            for source in MODELS:
                rows.append(_ci_rows(rng, {"source": source, "target": target, "map": "overall", "threshold": t,
                                           "kind": "leam"}, 0.05, 0.15))
            for kind in KINDS[1:]:
                rows.append(_ci_rows(rng, {"source": "none", "target": target, "map": "none", "threshold": t,
                                           "kind": kind}, 0.0, 0.05))
                for gender in ("all", "female", "male"):
                    tests.append({"source": target, "target": target, "map": "overall", "threshold": t, "random": kind,
                                  "leam_mean": 0.1, "random_mean": 0.02, "difference": 0.08, "wilcoxon_w": 1.0,
                                  "p_value": float(rng.uniform(0, 0.05)), "n": 12, "gender": gender})
            for kind, source in (("leam", target), *[(k, "none") for k in KINDS[1:]]):
                for gender in ("female", "male"):
                    gender_rows.append(_ci_rows(rng, {"source": source, "target": target, "map": "overall",
                                                      "threshold": t, "kind": kind, "gender": gender}, 0.0, 0.15))
    occlusion = pd.DataFrame(rows)
    occlusion.to_csv(data / "occlusion/summary.csv", index=False)
    occlusion_tests = pd.DataFrame(tests)
    occlusion_tests.to_csv(data / "occlusion/tests.csv", index=False)
    pd.DataFrame(gender_rows).to_csv(data / "occlusion/by_gender.csv", index=False)
    drops = [{"source": source, "target": target, "map": "overall" if kind == "leam" else "none", "threshold": t,
              "kind": kind, "repeat": 0, "image_id": image_id, "identity": image_id.split("/")[0],
              "gender": "female" if image_id.startswith("ann") else "male", "clean": 0.9,
              "occluded": 0.9 - (drop := float(rng.uniform(0.0, 0.15))), "drop": drop}
             for target in MODELS for t in (0.01, 0.05) for image_id in ids
             for kind, source in (("leam", target), *[(k, "none") for k in KINDS[1:]])]
    pd.DataFrame(drops).to_csv(data / "occlusion/drops.csv", index=False)
    json.dump(json_safe({**occlusion_headline(occlusion, occlusion_tests, threshold, "overall"), "n_images": 4}),
              open(root / "metrics/occlusion.json", "w"))


def make_repo(root: Path, photos: list[Path], threshold: float = 0.01, pages: list[str] | None = None,
              metrics_threshold: float = 0.01, report: dict | None = None) -> Path:
    """A repository layout: params.yaml, README, leam (linked), reports/ (copied, optionally fewer pages)."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update({"threshold": threshold, "models": MODELS})
    params.setdefault("report", {}).update({"gallery_identities": 2, "gallery_images": 2, **(report or {})})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "README.md").write_text("# x\n\n## Assumptions\n\n- **Test assumption**: stated here.\n\n## Next\n")
    (root / "leam").symlink_to(REPO / "leam", target_is_directory=True)
    reports = root / "reports"
    reports.mkdir()
    for page in REPO.joinpath("reports").glob("*.qmd"):
        shutil.copy(page, reports / page.name)
    config = yaml.safe_load((REPO / "reports/_quarto.yml").read_text())
    if pages is not None:
        config["website"]["navbar"]["left"] = [e for e in config["website"]["navbar"]["left"] if e["href"] in pages]
        config["project"]["render"] = pages
    (reports / "_quarto.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_outputs(root, photos, metrics_threshold)
    write_explain_outputs(root)
    write_protect_outputs(root, photos)
    return reports


@pytest.fixture(scope="module")
def site(tmp_path_factory, small_slice) -> Path:
    """The whole site rendered once with the fallback renderer; returns the _site folder."""
    photos = [Path(p) for p in small_slice.abspath[:4]]
    reports = make_repo(tmp_path_factory.mktemp("repo"), photos)
    renderer, files = render_site(reports, renderer="fallback")
    assert renderer == "fallback" and len(files) == 11
    return reports / "_site"


def _floats(column: pd.Series) -> np.ndarray:
    return column.astype(float).to_numpy()


# ------------------------------------------------------------------------------------------------- tests
def test_tables_show_the_numbers_of_the_metrics_files(site):
    root = site.parents[1]
    models = json.loads((root / "metrics/models.json").read_text())
    shown = find_table(html_tables(site / "index.html"), "Verification per model").set_index("model")
    for model, values in models.items():
        assert float(shown.loc[model, "AUC (cosine)"]) == pytest.approx(values["auc_cosine"], abs=5e-5)
        assert float(shown.loc[model, "mean cosine different"]) == pytest.approx(values["mean_cosine_different"], abs=5e-5)

    by_gender = find_table(html_tables(site / "gender.html"), "Verification within each gender")
    for row in by_gender.itertuples(index=False):
        assert float(row[by_gender.columns.get_loc("AUC (cosine)")]) == pytest.approx(
            models[row.model][row.gender]["auc_cosine"], abs=5e-5)
    assert len(by_gender) == 2 * len(MODELS)

    shares = json.loads((root / "metrics/correlation.json").read_text())["shares"]
    region_tables = html_tables(site / "regions.html")
    for model in MODELS:
        table = find_table(region_tables, model, "per class").set_index("layer")
        assert list(table.index) == LAYERS  # input side first, overall last
        for layer in LAYERS:
            for part, value in shares[model][layer].items():
                assert float(table.loc[layer, part]) == pytest.approx(value, abs=1.01e-4)

    similarity = json.loads((root / "metrics/similarity.json").read_text())["models"]
    pattern_tables = html_tables(site / "patterns.html")
    for model in MODELS:
        table = find_table(pattern_tables, model, "BC, top-t variant").set_index("layer")
        for layer, entry in similarity[model]["layers"].items():
            assert float(table.loc[layer, "same mean"]) == pytest.approx(entry["bc_top"]["same_mean"], abs=5e-5)
            assert float(table.loc[layer, "different mean"]) == pytest.approx(entry["bc_top"]["different_mean"], abs=5e-5)

    drops = json.loads((root / "metrics/occlusion.json").read_text())["models"]
    occlusion_tables = html_tables(site / "occlusion.html")
    for model in MODELS:
        table = find_table(occlusion_tables, model, "mean drop per threshold")
        leam = table[(table.kind == "leam") & (table.threshold.astype(float) == 0.01)]
        assert _floats(leam["mean drop"]) == pytest.approx([drops[model]["leam_drop"]], abs=5e-5)
    transfer = find_table(occlusion_tables, "source x target").set_index("source")
    assert transfer.shape == (2, 2)

    methods = html_tables(site / "methods.html")
    assert find_table(methods, "Cross-cutting").set_index("key").loc["threshold", "value"] == "0.01"
    assert "Test assumption" in (site / "methods.html").read_text()
    assert "l1, l2, overall" in (site / "methods.html").read_text()


def test_changing_the_threshold_changes_the_rendered_numbers(tmp_path, small_slice, site):
    photos = [Path(p) for p in small_slice.abspath[:4]]
    reports = make_repo(tmp_path / "repo", photos, threshold=0.05, pages=["regions.qmd", "occlusion.qmd"])
    render_site(reports, renderer="fallback")
    summary = pd.read_csv(reports.parent / "data/correlation/shares_summary.csv")
    before = find_table(html_tables(site / "regions.html"), "alpha", "per class").set_index("layer")
    after_tables = html_tables(reports / "_site/regions.html")
    after = find_table(after_tables, "alpha", "per class").set_index("layer")
    assert "top 0.05" in next(c for c in after_tables if "alpha" in c and "per class" in c)
    expected = summary[(summary.model == "alpha") & (summary.layer == "overall") & (summary.level == "class")
                       & np.isclose(summary.threshold, 0.05)].set_index("part")["mean"]
    for part, value in expected.items():
        assert float(after.loc["overall", part]) == pytest.approx(value, abs=5.01e-5)
    assert not np.allclose(_floats(before.loc["overall", list(expected.index)]),
                           _floats(after.loc["overall", list(expected.index)]))
    page = (reports / "_site/regions.html").read_text()
    assert "computed at threshold 0.01" in page and "dvc repro correlate" in page  # stale metrics are flagged
    transfer = find_table(html_tables(reports / "_site/occlusion.html"), "source x target", "top 0.05")
    assert transfer.set_index("source").shape == (2, 2)


def test_missing_outputs_show_a_note_instead_of_failing(tmp_path, small_slice):
    photos = [Path(p) for p in small_slice.abspath[:4]]
    reports = make_repo(tmp_path / "repo", photos, pages=["index.qmd"])
    (reports.parent / "metrics/models.json").unlink()
    (reports.parent / "metrics/data.json").unlink()
    render_site(reports, renderer="fallback")
    page = (reports / "_site/index.html").read_text()
    assert "run <code>dvc repro models</code>" in page and "run <code>dvc repro align</code>" in page
    assert "Photos and identities" not in page and "Verification per model" not in page
    assert 'class="answer claims-summary"' in page  # the answers come from the other metrics


# ---------------------------------------------------------------------------------------- answer blocks
PAGES = ["index", "gallery", "regions", "patterns", "variability", "gender", "occlusion", "explain", "protect",
         "person", "methods"]


def _answer_rows(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return find_table(tables, "Every number behind the answers")


def _json(root: Path, name: str) -> dict:
    return json.loads((root / f"metrics/{name}.json").read_text())


def test_every_page_opens_with_its_answer_block(site):
    for page in PAGES:
        text = (site / f"{page}.html").read_text()
        assert 'class="answer-block"' in text, page
        answer = text.index('class="answer-block"')
        assert answer < text.index("<img"), f"{page}: a figure comes before the answer"
        assert answer < text.index("<table"), f"{page}: a table comes before the answer"
    rule = (site / "methods.html").read_text()
    assert 'id="verdict-rule"' in rule and "factor of 2" in rule
    assert 'href="methods.html#verdict-rule"' in (site / "regions.html").read_text()


def test_the_overview_claims_table_shows_the_numbers_of_the_metrics_files(site):
    from leam.report.claims import all_answers, region_cis

    root = site.parents[1]
    correlation, similarity, occlusion = (_json(root, n) for n in ("correlation", "similarity", "occlusion"))
    shares = pd.read_csv(root / "data/correlation/shares_summary.csv")
    tables = html_tables(site / "index.html")
    numbers = _answer_rows(tables)
    numbers = numbers.assign(**{c: numbers[c].replace("", "nan").astype(float) for c in ("mean", "CI low", "CI high")})
    rows = {(r["claim"], r["model"], r["figure"]): r for r in numbers.to_dict("records")}

    def check(claim, model, figure, mean, ci):
        row = rows[(claim, model, figure)]
        assert row["mean"] == pytest.approx(mean, abs=5e-5), (claim, model, figure)
        assert [row["CI low"], row["CI high"]] == pytest.approx(list(ci), abs=5e-5), (claim, model, figure)

    for model in MODELS:
        nose = shares[(shares.model == model) & (shares.layer == "overall") & (shares.level == "region")
                      & (shares.part == "nose") & np.isclose(shares.threshold, correlation["threshold"])].iloc[0]
        check("regions.nose", model, "nose share", correlation["headline"][model]["nose"], (nose.ci_low, nose.ci_high))
        bc = similarity["models"][model]["layers"]["overall"]["bc_top"]
        check("patterns.bc", model, "same BC", bc["same_mean"], bc["same_ci"])
        check("patterns.bc", model, "different BC", bc["different_mean"], bc["different_ci"])
        drops = occlusion["models"][model]
        for kind in ("random_uniform", "random_face"):
            check(f"occlusion.{kind}", model, "LEAM drop", drops["leam_drop"], drops["leam_ci"])
            check(f"occlusion.{kind}", model, f"{kind} drop", drops[f"{kind}_drop"], drops[f"{kind}_ci"])
    assert set(numbers.claim) >= {"regions.nose", "patterns.bc", "occlusion.random_uniform", "occlusion.transfer"}

    # the summary: one row per claim, one cell per model with the verdict of the rule and our means
    summary = find_table(tables, "The paper's claims against this run").set_index("claim")
    expected = all_answers(correlation, similarity, occlusion, _json(root, "variability"),
                           region_cis(shares, correlation["threshold"]),
                           pd.read_csv(root / "data/occlusion/summary.csv"))
    titles = {"regions.nose": "Nose share of the critical pixels", "patterns.bc": "Same person vs different people (BC)",
              "occlusion.random_uniform": "LEAM vs random_uniform occlusion"}
    for answer in expected:
        if answer.key not in titles:
            continue
        cell = summary.loc[titles[answer.key], answer.model]
        assert cell.startswith(answer.verdict), (answer.key, answer.model, cell)
        shown = [float(v) for v in re.findall(r"-?\d+\.\d+", cell)]
        digits = 4 if answer.key.startswith("occlusion") else 3
        assert shown == pytest.approx([round(e.mean, digits) for e in answer.estimates], abs=1e-9)
    assert summary.loc[titles["regions.nose"], "paper"] == "0.189-0.297"


def test_page_answers_and_the_person_page_show_their_numbers(site):
    root = site.parents[1]
    correlation = _json(root, "correlation")
    regions = (site / "regions.html").read_text()
    for model in MODELS:
        assert f"nose share {correlation['headline'][model]['nose']:.3f} [" in regions
    occlusion = (site / "occlusion.html").read_text()
    assert f"LEAM drop {_json(root, 'occlusion')['models']['alpha']['leam_drop']:.4f} [" in occlusion

    person = (site / "person.html").read_text()
    assert "<strong>ann</strong> (female)" in person  # report.person "" = the first identity
    assert person.count('alt="LEAM maps of ') == len(MODELS)
    shares = pd.read_csv(root / "data/variability/shares_per_identity.csv")
    shown = find_table(html_tables(site / "person.html"), "per region", "ann vs everyone").set_index(["model", "part"])
    mine = shares[(shares.identity == "ann") & (shares.layer == "overall") & shares.part.isin(["nose", "eyes", "skin"])]
    for row in mine.itertuples():
        assert float(shown.loc[(row.model, row.part), "ann"]) == pytest.approx(row.mean_share, abs=5e-5)
    drops = pd.read_csv(root / "data/occlusion/drops.csv")
    leam = drops[(drops.identity == "ann") & (drops.kind == "leam") & (drops.target == "alpha")
                 & np.isclose(drops.threshold, 0.01)]["drop"].mean()
    table = find_table(html_tables(site / "person.html"), "Mean drop", "ann vs everyone").set_index(["model", "kind"])
    assert float(table.loc[("alpha", "leam"), "ann"]) == pytest.approx(leam, abs=5e-5)


def test_answer_blocks_follow_the_metrics_of_the_run(tmp_path, small_slice, site):
    """Metrics recomputed at threshold 0.05 (as `dvc exp run -S threshold=0.05` would) and one occlusion
    metric changed: the answers change with them; report.person picks the person page's identity."""
    photos = [Path(p) for p in small_slice.abspath[:4]]
    reports = make_repo(tmp_path / "repo", photos, threshold=0.05, metrics_threshold=0.05,
                        pages=["index.qmd", "regions.qmd", "person.qmd"], report={"person": "bob"})
    root = reports.parent
    occlusion = _json(root, "occlusion")
    alpha = occlusion["models"]["alpha"]
    alpha["leam_drop"], alpha["leam_ci"] = 0.001, [0.0005, 0.0015]  # now below every random baseline
    (root / "metrics/occlusion.json").write_text(json.dumps(occlusion))
    render_site(reports, renderer="fallback")
    correlation = _json(root, "correlation")
    before = (site / "regions.html").read_text()
    after = (reports / "_site/regions.html").read_text()
    nose = correlation["headline"]["alpha"]["nose"]
    assert f"nose share {nose:.3f} [" in after and f"nose share {nose:.3f} [" not in before
    assert "ours at top 0.05, the paper&#x27;s at top 0.01" in after
    assert "computed at threshold" not in after  # metrics and params agree: nothing is stale
    summary = find_table(html_tables(reports / "_site/index.html"), "The paper's claims against this run")
    cell = summary.set_index("claim").loc["LEAM vs random_uniform occlusion", "alpha"]
    assert cell.startswith("disagree") and "0.0010 vs" in cell
    numbers = _answer_rows(html_tables(reports / "_site/index.html"))
    leam = numbers[(numbers.claim == "occlusion.random_uniform") & (numbers.model == "alpha")
                   & (numbers.figure == "LEAM drop")]
    assert float(leam["mean"].iloc[0]) == pytest.approx(0.001, abs=5e-5)
    assert "<strong>bob</strong> (male)" in (reports / "_site/person.html").read_text()


def test_an_unknown_person_is_one_error_naming_the_identities(tmp_path, small_slice):
    from leam.errors import LeamError

    photos = [Path(p) for p in small_slice.abspath[:4]]
    reports = make_repo(tmp_path / "repo", photos, pages=["person.qmd"], report={"person": "nobody"})
    with pytest.raises(LeamError, match=r"report.person='nobody' is not an identity .*choose one of: ann, bob"):
        render_site(reports, renderer="fallback")


@pytest.mark.skipif(None in chromium_paths(), reason="needs Debian's chromium and chromium-driver")
def test_every_page_in_chromium_opens_with_its_answer_then_a_figure(site, tmp_path):
    """Each page at 1400 px: answer block first, a figure above the first table, every image loaded and
    described (alt text), no console error, and a full-page screenshot that is not blank."""
    for page in PAGES:
        check = check_page(site / f"{page}.html", tmp_path / f"{page}.png", width=1400)
        assert check.answer_blocks >= 1 and check.answer_first, page
        assert check.figure_before_table, f"{page}: no figure above the first table"
        assert check.images >= 1 and not check.broken_images and not check.images_without_alt, page
        assert not check.console_errors, (page, check.console_errors)
        assert check.screenshot_colours > 50 and (tmp_path / f"{page}.png").stat().st_size > 20_000, page


@pytest.mark.skipif(None in chromium_paths(), reason="needs Debian's chromium and chromium-driver")
def test_pages_open_in_chromium_without_broken_images_or_errors(site, tmp_path):
    index = check_page(site / "index.html", tmp_path / "index.png")
    assert index.title.startswith("LEAM report")
    assert index.tables >= 3 and not index.broken_images and not index.console_errors
    gallery = check_page(site / "gallery.html", tmp_path / "gallery.png")
    assert gallery.images >= 2 and not gallery.broken_images and not gallery.console_errors
    regions = check_page(site / "regions.html", tmp_path / "regions.png")
    assert regions.tables >= 4 and regions.images >= 2
    assert not regions.broken_images and not regions.console_errors
    assert any("nose" in text for text in regions.table_texts)
    assert (tmp_path / "regions.png").stat().st_size > 10_000


def test_overlay_normalises_each_map_by_its_own_maximum(small_slice):
    from leam.report.figures import normalise_per_map, overlays

    face = cv2.resize(cv2.imread(small_slice.abspath[0])[..., ::-1], (64, 64), interpolation=cv2.INTER_AREA)
    peak = np.zeros((8, 8), np.float32)
    peak[2, 5] = 1.0
    maps = np.stack([peak * 3.0, peak * 300.0, np.zeros_like(peak)])  # same shape, different scales, empty
    normalised = normalise_per_map(maps)
    assert normalised.max(axis=(1, 2)).tolist() == [1.0, 1.0, 0.0]
    tiles = overlays(np.stack([face] * 3), maps, size=64, alpha=0.5)
    assert tiles.shape == (3, 64, 64, 3) and tiles.dtype == np.uint8
    assert np.array_equal(tiles[0], tiles[1])  # display normalisation removes the scale
    hot = tiles[0][2 * 8 + 4, 5 * 8 + 4].astype(int) - face[2 * 8 + 4, 5 * 8 + 4].astype(int) // 2
    cold = tiles[2][2 * 8 + 4, 5 * 8 + 4].astype(int) - face[2 * 8 + 4, 5 * 8 + 4].astype(int) // 2
    assert hot[0] > cold[0] + 60  # the peak cell turns red (turbo high end), the empty map stays dark blue
