"""The typed params schema (leam.config): the shipped file validates, defaults cannot drift, bad values are one line."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leam.config import (
    IRESNET_ARCHS,
    ZOO_FORMATS,
    Config,
    ZooEntry,
    describe_schema,
    flat_defaults,
    load_config,
    validate_params,
)
from leam.errors import LeamError

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS = REPO_ROOT / "params.yaml"
SHA = "ab" * 32


def shipped() -> dict:
    return yaml.safe_load(PARAMS.read_text(encoding="utf-8"))


def put(raw: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value
    return raw


def rename(raw: dict, dotted: str, new_name: str) -> dict:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[new_name] = node.pop(last)
    return raw


def leaves(node: dict, prefix: str = "", stop: tuple[str, ...] = ("model_zoo", "leam.layers")) -> dict:
    """{dotted key: value} of a nested mapping; mapping-valued keys in ``stop`` are leaves."""
    out = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in stop:
            out.update(leaves(value, dotted + "."))
        else:
            out[dotted] = value
    return out


# --------------------------------------------------------------------------------------- the shipped file
def test_shipped_params_validate():
    config = load_config(PARAMS)
    assert isinstance(config, Config) and config.models and config.leam.placement in ("effective_field", "receptive_field", "centred")


def test_schema_defaults_equal_params_yaml():
    """The schema is the single source of defaults: it must say exactly what params.yaml says, key by key."""
    in_file = leaves(shipped())
    defaults = flat_defaults()
    assert sorted(in_file) == sorted(defaults), "params.yaml and leam.config list different keys"
    assert {key: value for key, value in in_file.items() if defaults[key] != value} == {}
    assert Config().model_dump() == load_config(PARAMS).model_dump()


def test_a_partial_file_takes_the_schema_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 3\nsimilarity:\n  emd_grid: 28\n")
    config = load_config(path)
    assert config.seed == 3 and config.similarity.emd_grid == 28 and config.similarity.workers == 2


def test_zoo_archs_match_the_iresnet_family():
    from leam.models import iresnet, zoo

    assert set(IRESNET_ARCHS) == set(iresnet.ARCHS)
    assert set(ZOO_FORMATS) == set(zoo.FORMATS)
    arch = ZooEntry.model_fields["arch"].annotation  # Literal[...] | None: only arcface_torch entries need it
    assert {a for literal in arch.__args__ if literal is not type(None) for a in literal.__args__} == set(iresnet.ARCHS)


def test_model_zoo_names_count_as_registered():
    raw = shipped()
    raw["model_zoo"] = {"arcface_r18": {"arch": "iresnet18", "path_or_url": "/nowhere/backbone.pth", "sha256": SHA}}
    raw["models"] = ["dlib_resnet", "arcface_r18"]
    raw["leam"]["layers"] = {"arcface_r18": ["prelu", "layer4.1"]}
    config = validate_params(raw)
    assert config.model_zoo["arcface_r18"].arch == "iresnet18"
    assert config.leam.layers["arcface_r18"] == ["prelu", "layer4.1"]


def test_readme_layer_example_goes_through_dvc_and_the_schema(tmp_path, monkeypatch):
    """`dvc exp run -S <override>` from the README, applied by DVC's own code, gives a valid mapping."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    line = next(line for line in (REPO_ROOT / "README.md").read_text().splitlines()
                if line.startswith("dvc exp run -S") and "leam.layers" in line)
    override = line.split("'")[1]
    (tmp_path / "params.yaml").write_text(PARAMS.read_text())
    monkeypatch.chdir(tmp_path)
    for path, overrides in to_path_overrides([override]).items():
        apply_overrides(path, overrides)
    config = load_config("params.yaml")
    assert config.leam.layers == {"dlib_resnet": ["stem", "layer3.0"]}


# ------------------------------------------------------------------------------------- bad-parameter corpus
def _zoo_without_sha(raw: dict) -> dict:
    raw["model_zoo"] = {"arcface_r100": {"arch": "iresnet100", "path_or_url": "/data/backbone.pth"}}
    raw["models"].append("arcface_r100")
    return raw


BAD = [  # (id, change to the shipped params, key path the message must name, words it must hold)
    ("threshold-type", lambda r: put(r, "threshold", "abc"), "threshold='abc'", "(0, 1]"),
    ("grid-type", lambda r: put(r, "similarity.emd_grid", "x"), "similarity.emd_grid='x'", "integer"),
    ("threshold-zero", lambda r: put(r, "threshold", 0), "threshold=0", "(0, 1]"),
    ("threshold-above-one", lambda r: put(r, "threshold", 1.5), "threshold=1.5", "(0, 1]"),
    ("threshold-nan", lambda r: put(r, "threshold", float("nan")), "threshold=nan", "(0, 1]"),
    ("threshold-bool", lambda r: put(r, "threshold", True), "threshold=True", "number"),
    ("grid-zero", lambda r: put(r, "similarity.emd_grid", 0), "similarity.emd_grid=0", ">= 1"),
    ("grid-not-a-divisor", lambda r: put(r, "similarity.emd_grid", 10), "similarity.emd_grid=10", "leam.store_size=112"),
    ("bc-grid-not-a-divisor", lambda r: put(r, "similarity.bc_grid", 3), "similarity.bc_grid=3", "0, 1, 2"),
    ("store-size-not-a-divisor", lambda r: put(r, "leam.store_size", 100), "leam.store_size=100", "align.frame_size"),
    ("occlusion-batch-zero", lambda r: put(r, "occlusion.batch_size", 0), "occlusion.batch_size=0", ">= 1"),
    ("leam-batch-zero", lambda r: put(r, "leam.batch_size", 0), "leam.batch_size=0", ">= 1"),
    ("workers-zero", lambda r: put(r, "similarity.workers", 0), "similarity.workers=0", ">= 1"),
    ("align-workers-zero", lambda r: put(r, "align.workers", 0), "align.workers=0", ">= 1"),
    ("bootstrap-zero", lambda r: put(r, "correlate.bootstrap", 0), "correlate.bootstrap=0", ">= 1"),
    ("seed-negative", lambda r: put(r, "seed", -1), "seed=-1", ">= 0"),
    ("retries-negative", lambda r: put(r, "data.retries", -2), "data.retries=-2", ">= 0"),
    ("list-threshold-zero", lambda r: put(r, "correlate.thresholds", [0.0, 0.5]), "correlate.thresholds[0]=0.0",
     "(0, 1]"),
    ("list-threshold-above-one", lambda r: put(r, "similarity.thresholds", [0.1, 2]), "similarity.thresholds[1]=2",
     "(0, 1]"),
    ("list-threshold-duplicate", lambda r: put(r, "occlusion.thresholds", [0.05, 0.05]), "occlusion.thresholds=",
     "listed twice"),
    ("models-empty", lambda r: put(r, "models", []), "models=[]", "non-empty"),
    ("occlusion-maps-empty", lambda r: put(r, "occlusion.maps", []), "occlusion.maps=[]", "non-empty"),
    ("occlusion-random-empty", lambda r: put(r, "occlusion.random", []), "occlusion.random=[]", "non-empty"),
    ("models-duplicate", lambda r: put(r, "models", ["dlib_resnet", "dlib_resnet"]), "models=", "listed twice"),
    ("model-unknown", lambda r: put(r, "models", ["dlib_resnet", "arcface_r50"]), "models=",
     "'arcface_r50' is not a registered model"),
    ("enum-source", lambda r: put(r, "data.source", "kaggle"), "data.source='kaggle'", "sample, imdb_face, folder"),
    ("enum-detector", lambda r: put(r, "align.detector", "mtcnn"), "align.detector='mtcnn'", "hog, cnn"),
    ("enum-sign", lambda r: put(r, "leam.sign", "both"), "leam.sign='both'", "supports_match"),
    ("enum-placement", lambda r: put(r, "leam.placement", "centered"), "leam.placement='centered'",
     "effective_field, receptive_field, centred"),
    ("enum-fill", lambda r: put(r, "occlusion.fill", "red"), "occlusion.fill='red'", "black, mean, blur"),
    ("enum-random-item", lambda r: put(r, "occlusion.random", ["uniform", "stripes"]), "occlusion.random[1]='stripes'",
     "uniform, face, blob"),
    ("enum-renderer", lambda r: put(r, "report.renderer", "pdf"), "report.renderer='pdf'", "auto, quarto, fallback"),
    ("layers-as-list", lambda r: put(r, "leam.layers", ["stem", "layer3.0"]), "leam.layers=", "mapping model"),
    ("layers-key-not-in-models", lambda r: put(r, "leam.layers", {"faceres": ["stem"]}) and
     put(r, "models", ["dlib_resnet"]), "leam.layers.faceres", "not in models"),
    ("layers-empty-list", lambda r: put(r, "leam.layers", {"dlib_resnet": []}), "leam.layers=", "empty"),
    ("layers-duplicate", lambda r: put(r, "leam.layers", {"dlib_resnet": ["stem", "stem"]}),
     "leam.layers.dlib_resnet=", "listed twice"),
    ("typo-in-group", lambda r: rename(r, "similarity.emd_grid", "emd_gird"), "similarity.emd_gird",
     "did you mean similarity.emd_grid"),
    ("typo-top-level", lambda r: rename(r, "threshold", "thresold"), "thresold", "did you mean threshold"),
    ("group-not-a-mapping", lambda r: put(r, "occlusion", 5), "occlusion=5", "mapping"),
    ("zoo-missing-sha256", _zoo_without_sha, "model_zoo.arcface_r100=", "path_or_url needs its sha256"),
    ("zoo-bad-sha256",
     lambda r: put(r, "model_zoo", {"x": {"arch": "iresnet50", "path_or_url": "/p", "sha256": "0123"}}),
     "model_zoo.x.sha256='0123'", "64 hexadecimal"),
    ("zoo-bad-arch", lambda r: put(r, "model_zoo", {"x": {"arch": "resnet50", "path_or_url": "/p", "sha256": SHA}}),
     "model_zoo.x.arch='resnet50'", "iresnet18"),
    ("folder-without-root", lambda r: put(r, "data.source", "folder"), "data.folder_root", "data.source=folder"),
    ("imdb-without-csv", lambda r: put(r, "data.source", "imdb_face"), "data.imdb_csv", "data.source=imdb_face"),
    ("pairs-without-file", lambda r: put(r, "leam.reference", "pairs"), "leam.pairs_file", "leam.reference=pairs"),
    ("farl-without-model", lambda r: put(r, "parsing.backend", "farl"), "parsing.farl_model_path", "farl_url"),
    ("bool-as-string", lambda r: put(r, "similarity.face_mask", "yes"), "similarity.face_mask='yes'", "true or false"),
    ("control-beyond-draw", lambda r: put(r, "symmetry.control_images", 99), "symmetry", "must not exceed max_images"),
]


@pytest.mark.parametrize("change, key, words", [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_parameter_is_one_line_naming_the_key(tmp_path, change, key, words):
    raw = change(copy.deepcopy(shipped()))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(LeamError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "pydantic" not in message.lower()
    assert key in message and words in message, message


def test_unparsable_and_odd_files_are_one_line(tmp_path):
    cases = {"bad.yaml": "threshold: [0.01\nseed: 0\n", "dup.yaml": "seed: 0\nseed: 1\n", "list.yaml": "- 1\n- 2\n",
             "empty.yaml": ""}
    expected = {"bad.yaml": "cannot parse", "dup.yaml": "duplicate key 'seed'", "list.yaml": "must hold a mapping",
                "empty.yaml": "must hold a mapping"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(LeamError) as caught:
            load_config(tmp_path / name)
        assert "\n" not in str(caught.value) and expected[name] in str(caught.value)
    with pytest.raises(LeamError, match="params file not found"):
        load_config(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------------ command lines
def _run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _bad_file(tmp_path: Path, name: str, change) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(change(copy.deepcopy(shipped()))))
    return path


@pytest.mark.parametrize("change, key", [
    (lambda r: put(r, "threshold", 0), "threshold=0 is not valid"),
    (lambda r: rename(r, "occlusion.batch_size", "batchsize"), "unknown key occlusion.batchsize"),
    (lambda r: put(r, "models", ["dlib_resnet", "dlib_resnet"]), "models=['dlib_resnet', 'dlib_resnet']"),
])
def test_params_command_reports_one_line_and_exit_code_2(tmp_path, change, key):
    result = _run("stages.params", "--params", str(_bad_file(tmp_path, "bad.yaml", change)))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: ") and key in lines[0]


def test_params_command_accepts_the_shipped_file_and_teaches_the_schema():
    result = _run("stages.params")
    assert result.returncode == 0 and result.stdout.startswith("OK") and not result.stderr
    from stages.params import build_parser

    text = build_parser().format_help()
    for key, default in flat_defaults().items():
        assert f"{key}  [" in text, key
    assert "leam.placement  [one of: effective_field, receptive_field, centred]  default: " in text
    assert "similarity.emd_grid  [an integer >= 1]  default: 14" in text
    assert describe_schema() in text


def test_a_stage_stops_on_a_bad_file_before_any_work(tmp_path):
    bad = _bad_file(tmp_path, "bad.yaml", lambda r: put(r, "similarity.emd_grid", 0))
    out = tmp_path / "out"
    result = _run("stages.correlate", "--params", str(bad), "--leam-dir", str(tmp_path / "no_leam"),
                  "--parsing-dir", str(tmp_path / "no_parsing"), "--out", str(out), "--metrics",
                  str(tmp_path / "m.json"), "--no-progress")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    # the params error, not the (later) missing-input error: nothing was read or written
    assert lines[0] == "error: similarity.emd_grid=0 is not valid; it must be an integer >= 1"
    assert not out.exists() and not (tmp_path / "m.json").exists()
