"""deploy/train/plan.py: the inputs of train.yml -> the sweep's points and the bounds (what the matrix gets)."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.unit


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_plan", REPO_ROOT / "deploy" / "train" / "plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plan_module = _module()


def plan(**env: str) -> dict[str, str]:
    return plan_module.plan(env)


def test_a_push_trains_one_point_with_the_defaults():
    outputs = plan()
    assert json.loads(outputs["points"]) == [{"name": "p0", "overrides": "train=gpu"}]
    assert outputs == {**outputs, "max-parallel": "1", "minutes": "360", "instance-type": "g5.xlarge", "spot": "false"}


def test_overrides_pass_through_as_given():
    outputs = plan(OVERRIDES="train=gpu  train.epochs=50\nmodel=yolov8s", SPOT="true", MAX_HOURS="2")
    assert json.loads(outputs["points"]) == [{"name": "p0", "overrides": "train=gpu train.epochs=50 model=yolov8s"}]
    assert outputs["spot"] == "true" and outputs["minutes"] == "120"


def test_a_sweep_is_the_grid_of_its_axes_on_top_of_the_overrides():
    outputs = plan(OVERRIDES="train=gpu", SWEEP="train.lr0=0.01,0.001 train.imgsz=320,640", MAX_PARALLEL="3")
    points = json.loads(outputs["points"])
    assert [p["overrides"] for p in points] == [
        "train=gpu train.lr0=0.01 train.imgsz=320",
        "train=gpu train.lr0=0.01 train.imgsz=640",
        "train=gpu train.lr0=0.001 train.imgsz=320",
        "train=gpu train.lr0=0.001 train.imgsz=640",
    ]
    assert [p["name"] for p in points] == ["p0", "p1", "p2", "p3"]
    assert outputs["max-parallel"] == "3"


def test_max_parallel_never_exceeds_the_points():
    assert plan(SWEEP="model=yolov8n,yolov8s", MAX_PARALLEL="8")["max-parallel"] == "2"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_PARALLEL": "9"}, "max parallel: 9 is out of range 1..8"),
        ({"MAX_PARALLEL": "0"}, "out of range"),
        ({"MAX_HOURS": "25"}, "max hours: 25 is out of range 1..24"),
        ({"MAX_HOURS": "two"}, "not a whole number"),
        ({"OVERRIDES": "train.epochs=5;reboot"}, "is not a `key=value` override"),
        ({"OVERRIDES": "train.epochs=$(id)"}, "is not a `key=value` override"),
        ({"OVERRIDES": "train.name='x y'"}, "is not a `key=value` override"),
        ({"SWEEP": "train.lr0"}, "needs `key=v1,v2,...`"),
        ({"SWEEP": "train.lr0=1,2 train.lr0=3"}, "given twice"),
        ({"SWEEP": "a=1,2 b=1,2 c=1,2 d=1,2 e=1,2 f=1,2"}, "64 points; at most 32"),
        ({"INSTANCE_TYPE": "g5.xlarge --dry-run"}, "is not an EC2 instance type"),
        ({"SPOT": "maybe"}, "is not true or false"),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(env: dict, message: str):
    with pytest.raises(plan_module.PlanError, match=message.replace("$", r"\$").replace("(", r"\(")):
        plan(**env)


def test_main_writes_github_outputs(tmp_path, monkeypatch, capsys):
    output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("SWEEP", "train.lr0=0.1,0.2")
    assert plan_module.main() == 0
    lines = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert set(lines) == {"points", "max-parallel", "minutes", "instance-type", "spot"}
    assert len(json.loads(lines["points"])) == 2

    monkeypatch.setenv("MAX_HOURS", "99")
    assert plan_module.main() == 2
    assert "::error title=train plan::max hours" in capsys.readouterr().err
