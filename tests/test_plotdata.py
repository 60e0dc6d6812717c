"""Plot tables are exact selections of the stage summaries (tiny hand-made summaries)."""

import numpy as np
import pandas as pd

from leam.report import plotdata


def test_occlusion_table_takes_source_equals_target_and_random_rows_of_that_target():
    summary = pd.DataFrame([
        ("m", "m", "overall", 0.01, "leam", 0.2), ("m", "m", "stem", 0.01, "leam", 0.9),
        ("m", "other", "overall", 0.01, "leam", 0.7), ("none", "m", "none", 0.01, "random_uniform", 0.05),
        ("none", "other", "none", 0.01, "random_uniform", 0.5), ("m", "m", "overall", 0.05, "leam", 0.3),
        ("none", "m", "none", 0.05, "random_face", 0.1)],
        columns=["source", "target", "map", "threshold", "kind", "mean"])
    table = plotdata.occlusion_by_threshold(summary, "m", "overall")
    assert list(table.columns) == ["threshold", "leam", "random_uniform", "random_face", "random_blob"]
    assert table.threshold.tolist() == [0.01, 0.05] and table.leam.tolist() == [0.2, 0.3]
    assert table.random_uniform.iloc[0] == 0.05 and np.isnan(table.random_uniform.iloc[1])
    assert table.random_face.iloc[1] == 0.1 and table.random_blob.isna().all()


def test_similarity_table_orders_layers_by_depth():
    summary = pd.DataFrame([
        ("m", "b", 0.01, "bc", "same", 0.6), ("m", "b", 0.01, "bc", "different", 0.4),
        ("m", "a", 0.01, "bc", "same", 0.5), ("m", "a", 0.01, "bc", "different", 0.3),
        ("m", "a", 1.0, "bc", "same", 0.99)],
        columns=["model", "layer", "threshold", "metric", "pair_type", "mean"])
    table = plotdata.similarity_by_layer(summary, "m", 0.01, ["a", "b"])
    assert table.to_dict("list") == {"depth": [0, 1], "layer": ["a", "b"], "same": [0.5, 0.6], "different": [0.3, 0.4]}


def test_region_table_is_sorted_by_share_for_the_requested_map_and_threshold():
    summary = pd.DataFrame([
        ("m", "overall", 0.01, "region", "nose", 0.3), ("m", "overall", 0.01, "region", "skin", 0.5),
        ("m", "overall", 0.01, "class", "nose", 0.3), ("m", "stem", 0.01, "region", "nose", 0.9),
        ("m", "overall", 0.05, "region", "nose", 0.8)],
        columns=["model", "layer", "threshold", "level", "part", "mean"])
    table = plotdata.region_shares(summary, "m", 0.01)
    assert table.to_dict("list") == {"part": ["skin", "nose"], "share": [0.5, 0.3]}
