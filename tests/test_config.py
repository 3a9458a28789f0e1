"""visapp.config: conf/ is the one source of values; keys, types, enums and ranges are checked the same way
for the stages, the CLI and the service."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from conftest import REPO_ROOT
from visapp.composition import compose, compose_params_yaml, default_params
from visapp.config import ConfigError, DataConfig, OnError, Params, TrainConfig, load_params, params_dict, to_params

pytestmark = pytest.mark.unit


def raw_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_params_yaml_equals_the_composition_of_conf():
    """params.yaml is what `dvc exp run` would compose from conf/ (run `make params` after editing conf/)."""
    assert (REPO_ROOT / "params.yaml").read_text() == compose_params_yaml(REPO_ROOT / "conf")


def test_params_yaml_loads_into_the_typed_schema():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.classes and params.paths.raw == "data/raw"
    assert params.data.on_error is OnError.fail


def test_the_schema_has_no_defaults_of_its_own():
    """Every value comes from conf/: a dataclass default would be a second source that can disagree."""
    for schema in (Params, DataConfig, TrainConfig):
        for field in dataclasses.fields(schema):
            assert field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING, field.name


def test_defaults_are_conf_composed():
    assert params_dict(default_params(REPO_ROOT / "conf")) == compose(REPO_ROOT / "conf")


def test_a_missing_key_says_to_recompose():
    raw = raw_params()
    del raw["train"]["epochs"]
    with pytest.raises(ConfigError, match=r"train\.epochs is missing .*make params"):
        to_params(raw)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("train.epoch=3", "train.epoch is not a param: did you mean train.epochs?"),
        ("trian.epochs=3", "trian is not a param: did you mean train?"),
        ("data.clases=[a]", "data.clases is not a param: did you mean data.classes?"),
        ("train.zzz=1", "train.zzz is not a param; the keys are those of conf/ (epochs, imgsz"),
    ],
)
def test_an_unknown_key_names_the_nearest_known_one(override, words):
    with pytest.raises(ConfigError) as caught:
        load_params(REPO_ROOT / "params.yaml", [override])
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("train.imgsz=-5", "train.imgsz = -5 is out of range: it must be at least 32 and at most 8192"),
        ("train.epochs=0", "train.epochs = 0 is out of range: it must be at least 1"),
        ("train.lr0=0", "train.lr0 = 0.0 is out of range: it must be above 0"),
        ("train.batch=0", "train.batch = 0 is out of range"),
        ("train.workers=-1", "train.workers = -1 is out of range"),
        ("data.bbox_tolerance_px=-1", "data.bbox_tolerance_px = -1.0 is out of range: it must be at least 0"),
        ("data.split.val=1.5", "data.split.val = 1.5 is out of range"),
        ("seed=-3", "seed = -3 is out of range"),
    ],
)
def test_a_value_out_of_range_names_the_range(override, words):
    with pytest.raises(ConfigError) as caught:
        load_params(REPO_ROOT / "params.yaml", [override])
    assert words in str(caught.value)


def test_enum_like_values_list_what_they_accept():
    with pytest.raises(ConfigError, match=r"data\.on_error.*expected one of \[fail, skip\]"):
        load_params(REPO_ROOT / "params.yaml", ["data.on_error=ignore"])
    with pytest.raises(ConfigError, match=r"train\.resume.*auto, never"):
        load_params(REPO_ROOT / "params.yaml", ["train.resume=sometimes"])
    with pytest.raises(ConfigError, match=r"train\.optimizer.*AdamW"):
        load_params(REPO_ROOT / "params.yaml", ["train.optimizer=adamw2"])


def test_a_mistyped_value_names_its_key():
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_params(REPO_ROOT / "params.yaml", ["train.epochs=many"])


def test_rules_across_keys():
    with pytest.raises(ConfigError, match="add up to 1"):
        load_params(REPO_ROOT / "params.yaml", ["data.split.train=0.9"])
    with pytest.raises(ConfigError, match="more than once"):
        load_params(REPO_ROOT / "params.yaml", ["data.classes=[a,b,a]"])
    with pytest.raises(ConfigError, match="empty"):
        load_params(REPO_ROOT / "params.yaml", ["data.classes=[]"])


def test_typed_params_round_trip_to_what_params_yaml_says():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params_dict(params) == raw_params()


def test_one_function_says_which_params_apply_in_a_folder(tmp_path):
    """params.yaml where there is one (the pipeline's), else conf/'s composition; a face's changes over them,
    through every check (the class list's too)."""
    from visapp.composition import applicable_params, default_params
    from visapp.config import ConfigError

    assert applicable_params(tmp_path) == default_params()
    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text().replace("epochs: 40", "epochs: 7"))
    assert applicable_params(tmp_path).train.epochs == 7
    changed = applicable_params(tmp_path, {"data": {"classes": ["a", "b"]}, "diff": {"max_class_drift": 0.5}})
    assert changed.data.classes == ["a", "b"] and changed.diff.max_class_drift == 0.5 and changed.train.epochs == 7
    with pytest.raises(ConfigError, match=r"data\.classes is empty"):
        applicable_params(tmp_path, {"data": {"classes": []}})
