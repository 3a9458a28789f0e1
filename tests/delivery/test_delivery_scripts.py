"""deploy/deploy.sh (the SSM rollout loop of deploy.yml) and deploy/janitor.sh against a fake `aws` on PATH.

The fake answers from a JSON scenario and records every call, so the tests see the order of the calls: one
instance at a time, the API before the workers, the first failure stopping the rollout.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.integration

BASH = shutil.which("bash") or "/bin/bash"
DOCUMENT = REPO_ROOT / "deploy" / "ssm" / "visapp-rollout.json"
COMMIT_DIGEST = {"cpu": "sha256:" + "1" * 64, "cu130": "sha256:" + "2" * 64}

FAKE_AWS = r"""
import json, os, sys
from pathlib import Path

scenario_path = Path(os.environ["FAKE_AWS_SCENARIO"])
scenario = json.loads(scenario_path.read_text())
args = sys.argv[1:]
with open(os.environ["FAKE_AWS_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")


def option(name):
    return args[args.index(name) + 1] if name in args else None


def save():
    scenario_path.write_text(json.dumps(scenario))


def fail(message):
    sys.stderr.write(f"An error occurred ({message})\n")
    sys.exit(254)


service, command = args[0], args[1]
if (service, command) == ("ecr", "describe-repositories"):
    print(scenario["repository_uri"])
elif (service, command) == ("ecr", "describe-images"):
    tag = option("--image-ids").removeprefix("imageTag=")
    if tag not in scenario["images"]:
        fail(f"ImageNotFoundException: {tag}")
    print(scenario["images"][tag])
elif (service, command) == ("ssm", "update-document"):
    if scenario.get("update_refused"):
        fail("DuplicateDocumentContent")
    scenario["documents"][scenario["next_version"]] = Path(option("--content").removeprefix("file://")).read_text()
    print(scenario["next_version"])
    save()
elif (service, command) == ("ssm", "describe-document"):
    print(scenario["latest_version"])
elif (service, command) == ("ssm", "get-document"):
    print(scenario["documents"][option("--document-version")])
elif (service, command) == ("ec2", "describe-instances") and "--instance-ids" in args:
    print(scenario["state_reasons"].get(option("--instance-ids"), "None"))
elif (service, command) == ("ecr", "batch-get-image"):
    digest = option("--image-ids").removeprefix("imageDigest=")
    field = "imageManifestMediaType" if "MediaType" in option("--query") else "imageManifest"
    print(scenario["manifests"][digest][field])
elif (service, command) == ("ecr", "put-image"):
    tag = option("--image-tag")
    digest = next(d for d, m in scenario["manifests"].items() if m["imageManifest"] == option("--image-manifest"))
    assert option("--image-manifest-media-type") == scenario["manifests"][digest]["imageManifestMediaType"]
    if tag in scenario["images"]:  # an immutable repository
        fail(f"ImageTagAlreadyExistsException: The image tag '{tag}' already exists")
    scenario["images"][tag] = digest
    save()
elif (service, command) == ("ec2", "describe-instances"):
    filters = dict(f.removeprefix("Name=").split(",Values=") for f in args if f.startswith("Name="))
    if "tag:vis-service" in filters:
        print("\t".join(scenario["instances"].get(filters["tag:vis-service"], [])))
    else:
        for row in scenario["runners"]:
            print("\t".join(row))
elif (service, command) == ("ec2", "terminate-instances"):
    scenario["terminated"] += args[args.index("--instance-ids") + 1 : args.index("--output")]
    save()
elif (service, command) == ("ssm", "send-command"):
    instance = option("--instance-ids")
    scenario["sent"].append({"instance": instance, "version": option("--document-version"),
                             "parameters": json.loads(option("--parameters"))})
    save()
    print(f"cmd-{instance}")
elif (service, command) == ("ssm", "get-command-invocation"):
    instance = option("--instance-id")
    if option("--query") != "Status":
        print(f"output of {instance}")
    else:
        statuses = scenario["statuses"].setdefault(instance, ["InProgress", "Success"])
        print(statuses.pop(0) if len(statuses) > 1 else statuses[0])
        save()
else:
    fail(f"fake aws: unsupported {args}")
"""


class FakeAws:
    def __init__(self, root: Path, scenario: dict):
        self.root = root
        bin_dir = root / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "aws"
        fake.write_text(f"#!{sys.executable}\n{FAKE_AWS}")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
        self.scenario_file = root / "scenario.json"
        self.scenario_file.write_text(json.dumps(scenario))

    @property
    def scenario(self) -> dict:
        return json.loads(self.scenario_file.read_text())

    def calls(self) -> list[list[str]]:
        log = self.root / "aws.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def add_tool(self, name: str, source: str) -> None:
        """Another fake beside `aws` (e.g. `docker`), reading and writing the same scenario."""
        tool = self.root / "bin" / name
        tool.write_text(f"#!{sys.executable}\n{source}")
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)

    def run(self, script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
        environment = {
            "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.root),
            "FAKE_AWS_SCENARIO": str(self.scenario_file),
            "FAKE_AWS_LOG": str(self.root / "aws.log"),
            "GITHUB_STEP_SUMMARY": str(self.root / "summary.md"),
            **env,
        }
        return subprocess.run(
            [BASH, str(REPO_ROOT / "deploy" / script)],
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )


# --- deploy.sh ----------------------------------------------------------------------------------------------------


@pytest.fixture
def promoted(tmp_path: Path) -> tuple[Path, str]:
    """A git repository whose commit holds a version tag and its promotion tag (as GTO makes them)."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    (repo / "dvc.lock").write_text("weights\n")
    git("add", "-A")
    git("commit", "-q", "-m", "train")
    git("tag", "-a", "yolo@v2.0.0", "-m", "older version on the same commit")
    git("tag", "-a", "yolo@v3.0.0", "-m", "version")
    git("tag", "-a", "yolo#prod#3", "-m", "promotion")
    return repo, git("rev-parse", "HEAD")


def deploy_scenario(commit: str, **changes) -> dict:
    scenario = {
        "repository_uri": "registry.invalid/visapp",
        "images": {f"{commit}-cpu": COMMIT_DIGEST["cpu"], f"{commit}-cu130": COMMIT_DIGEST["cu130"]},
        "documents": {},
        "next_version": "7",
        "latest_version": "6",
        "instances": {"api": ["i-api-b", "i-api-a"], "worker": ["i-gpu-1"]},
        "statuses": {},
        "sent": [],
        "runners": [],
        "terminated": [],
        "state_reasons": {},
        "manifests": {},
    }
    scenario.update(changes)
    return scenario


def deploy(aws: FakeAws, repo: Path, **env: str) -> subprocess.CompletedProcess:
    return aws.run(
        "deploy.sh",
        repo,
        DEPLOY_TAG="yolo#prod#3",
        SSM_DOCUMENT_FILE=str(DOCUMENT),
        DEPLOY_POLL_SECONDS="0",
        **env,
    )


def test_deploy_rolls_out_the_api_then_the_workers_one_instance_at_a_time(tmp_path, promoted):
    repo, commit = promoted
    aws = FakeAws(tmp_path, deploy_scenario(commit))

    proc = deploy(aws, repo)

    assert proc.returncode == 0, proc.stderr
    sent = aws.scenario["sent"]
    assert [s["instance"] for s in sent] == ["i-api-a", "i-api-b", "i-gpu-1"]
    assert {s["version"] for s in sent} == {"7"}, "the document version of this commit, explicitly"
    assert sent[0]["parameters"] == {
        "image": [f"registry.invalid/visapp@{COMMIT_DIGEST['cpu']}"],
        "role": ["api"],
        "configPath": ["/visapp/prod"],
        "modelVersion": ["yolo@v3.0.0"],
    }
    assert sent[2]["parameters"]["image"] == [f"registry.invalid/visapp@{COMMIT_DIGEST['cu130']}"]
    assert sent[2]["parameters"]["role"] == ["worker"]
    # each instance's command is waited for before the next one is sent
    verbs = [(c[1], c[c.index("--instance-ids") + 1] if "--instance-ids" in c else None) for c in aws.calls()]
    order = [instance for verb, instance in verbs if verb == "send-command"]
    assert order == ["i-api-a", "i-api-b", "i-gpu-1"]
    calls = aws.calls()
    for previous, following in itertools.pairwise(order):
        sent_next = next(i for i, c in enumerate(calls) if c[1] == "send-command" and following in c)
        assert any(c[1] == "get-command-invocation" and previous in c for c in calls[:sent_next])
    summary = (tmp_path / "summary.md").read_text()
    assert "yolo@v3.0.0" in summary and "| i-gpu-1 | worker | Success |" in summary


def test_deploy_stops_at_the_first_instance_that_fails(tmp_path, promoted):
    repo, commit = promoted
    aws = FakeAws(tmp_path, deploy_scenario(commit, statuses={"i-api-b": ["InProgress", "Failed"]}))

    proc = deploy(aws, repo)

    assert proc.returncode == 1
    assert [s["instance"] for s in aws.scenario["sent"]] == ["i-api-a", "i-api-b"], "i-gpu-1 never reached"
    assert "i-api-b (api): Failed" in proc.stderr and "output of i-api-b" in proc.stderr


def test_deploy_refuses_a_promotion_without_a_version_tag(tmp_path, promoted):
    repo, commit = promoted
    for tag in ("yolo@v2.0.0", "yolo@v3.0.0"):
        subprocess.run(["git", "tag", "-d", tag], cwd=repo, check=True, capture_output=True)
    aws = FakeAws(tmp_path, deploy_scenario(commit))

    proc = deploy(aws, repo)

    assert proc.returncode == 1
    assert "no yolo@v* tag" in proc.stderr
    assert aws.calls() == []


def test_deploy_waits_for_the_images_then_gives_up_naming_the_build(tmp_path, promoted):
    repo, commit = promoted
    aws = FakeAws(tmp_path, deploy_scenario(commit, images={}))

    proc = deploy(aws, repo, DEPLOY_IMAGE_WAIT="0")

    assert proc.returncode == 1
    assert "ecr.yml" in proc.stderr
    assert aws.scenario["sent"] == []


def test_deploy_runs_only_a_document_version_whose_content_is_this_commits(tmp_path, promoted):
    repo, commit = promoted
    (tmp_path / "same").mkdir()
    aws = FakeAws(
        tmp_path / "same", deploy_scenario(commit, update_refused=True, documents={"6": DOCUMENT.read_text()})
    )

    proc = deploy(aws, repo)
    assert proc.returncode == 0, proc.stderr
    assert {s["version"] for s in aws.scenario["sent"]} == {"6"}

    (tmp_path / "other").mkdir()
    stale = {"6": '{"schemaVersion": "2.2"}'}
    aws = FakeAws(tmp_path / "other", deploy_scenario(commit, update_refused=True, documents=stale))
    proc = deploy(aws, repo)
    assert proc.returncode == 1
    assert "is not" in proc.stderr and aws.scenario["sent"] == []


def test_deploy_refuses_a_tag_that_is_not_a_promotion(tmp_path, promoted):
    repo, commit = promoted
    aws = FakeAws(tmp_path, deploy_scenario(commit))

    proc = aws.run("deploy.sh", repo, DEPLOY_TAG="yolo@v3.0.0", SSM_DOCUMENT_FILE=str(DOCUMENT))

    assert proc.returncode == 1 and "not a promotion tag" in proc.stderr


# --- janitor.sh ---------------------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def launched(hours_ago: float) -> str:
    return datetime.fromtimestamp(NOW.timestamp() - hours_ago * 3600, UTC).isoformat()


RUNNERS = [
    ["i-over-its-limit", launched(7), "360"],  # bound 6 h + 30 min: stale
    ["i-young", launched(1), "360"],
    ["i-untagged-old", launched(27), "None"],  # no limit: the 26 h cap
    ["i-long-limit", launched(25), "2000"],  # limit beyond the cap: the cap, 26 h: not yet
]


@pytest.mark.parametrize("dry_run", [False, True])
def test_janitor_terminates_runners_past_their_bound(tmp_path, dry_run):
    aws = FakeAws(tmp_path, deploy_scenario("x", runners=RUNNERS))

    proc = aws.run(
        "janitor.sh",
        tmp_path,
        GITHUB_REPOSITORY="example-org/vis",
        NOW_EPOCH=str(int(NOW.timestamp())),
        DRY_RUN=str(dry_run).lower(),
    )

    assert proc.returncode == 0, proc.stderr
    describe = next(c for c in aws.calls() if c[1] == "describe-instances")
    assert "Name=tag:vis-role,Values=training-runner" in describe
    assert "Name=tag:vis-repository,Values=example-org/vis" in describe
    expected = [] if dry_run else ["i-over-its-limit", "i-untagged-old"]
    assert aws.scenario["terminated"] == expected
    assert ("would terminate i-over-its-limit i-untagged-old" in proc.stdout) is dry_run


def test_janitor_with_nothing_to_do(tmp_path):
    aws = FakeAws(tmp_path, deploy_scenario("x", runners=[]))

    proc = aws.run("janitor.sh", tmp_path, GITHUB_REPOSITORY="example-org/vis")

    assert proc.returncode == 0, proc.stderr
    assert "no stale runner" in proc.stdout
    assert not any(c[1] == "terminate-instances" for c in aws.calls())


# --- train/verdict.sh ------------------------------------------------------------------------------------------


def verdict(tmp_path: Path, state_reasons: dict[str, str] | None = None, **env: str) -> tuple[int, str, str]:
    """deploy/train/verdict.sh with the train workflow's variables: (exit status, retry, output)."""
    aws = FakeAws(tmp_path, deploy_scenario("x", state_reasons=state_reasons or {}))
    output = tmp_path / "github_output"
    proc = aws.run("train/verdict.sh", tmp_path, GITHUB_OUTPUT=str(output), **env)
    retry = dict(line.split("=", 1) for line in output.read_text().splitlines())["retry"]
    return proc.returncode, retry, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("env", "reasons", "expected"),
    [
        ({"FINISHED": "true", "SPOT": "true", "READY": "true"}, {}, (0, "false")),
        # no spot capacity: no runner, no instance; not the training failing, the on-demand resume decides
        ({"FINISHED": "", "SPOT": "true", "READY": "", "INSTANCE_ID": ""}, {}, (0, "true")),
        (
            {"FINISHED": "", "SPOT": "true", "READY": "true", "INSTANCE_ID": "i-1"},
            {"i-1": "Server.SpotInstanceTermination"},
            (0, "true"),
        ),
        # a failed training on a spot runner that is still there, or on demand: red
        ({"FINISHED": "", "SPOT": "true", "READY": "true", "INSTANCE_ID": "i-1"}, {"i-1": "None"}, (1, "false")),
        ({"FINISHED": "", "SPOT": "false", "READY": "true", "INSTANCE_ID": "i-1"}, {}, (1, "false")),
        ({"FINISHED": "", "SPOT": "false", "READY": "", "INSTANCE_ID": ""}, {}, (1, "false")),
    ],
    ids=["finished", "no-spot-capacity", "spot-reclaimed", "failed-on-spot", "failed-on-demand", "no-on-demand-runner"],
)
def test_the_verdict_turns_only_a_failed_training_red(tmp_path, env, reasons, expected):
    status, retry, output = verdict(tmp_path, reasons, **env)

    assert (status, retry) == expected, output
    if expected == (1, "false"):
        assert "::error::" in output


# --- ecr-image.sh ------------------------------------------------------------------------------------------------

FAKE_DOCKER = r"""
import json, os, sys
from pathlib import Path

scenario_path = Path(os.environ["FAKE_AWS_SCENARIO"])
scenario = json.loads(scenario_path.read_text())
args = sys.argv[1:]
with open(os.environ["FAKE_AWS_LOG"], "a") as log:
    log.write(json.dumps(["docker", *args]) + "\n")
if args[:2] == ["buildx", "inspect"]:
    sys.exit(0 if scenario.get("builder") else 1)
if args[:2] == ["buildx", "create"]:
    scenario["builder"] = True
elif args[:2] == ["buildx", "build"]:
    tag = args[args.index("--tag") + 1].rsplit(":", 1)[1]
    if scenario.get("pushed_meanwhile"):  # another run pushed the tag while this one built
        scenario["images"][tag] = scenario["pushed_meanwhile"]
        scenario_path.write_text(json.dumps(scenario))
        sys.stderr.write("ImageTagAlreadyExistsException\n")
        sys.exit(1)
    if scenario.get("build_fails"):
        sys.exit(1)
    digest = scenario["built_digest"]
    scenario["images"][tag] = digest
    scenario["manifests"][digest] = {"imageManifest": '{"config": "built"}',
                                     "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json"}
    Path(args[args.index("--metadata-file") + 1]).write_text(json.dumps({"containerimage.digest": digest}))
else:
    sys.exit(f"fake docker: unsupported {args}")
scenario_path.write_text(json.dumps(scenario))
"""
SHA = "c0ffee" * 6 + "c0ff"
BUILT, OTHER = "sha256:" + "3" * 64, "sha256:" + "4" * 64


def ecr_image(tmp_path: Path, ref: str = "refs/heads/main", **scenario) -> tuple[subprocess.CompletedProcess, FakeAws]:
    aws = FakeAws(tmp_path, deploy_scenario(SHA, **{"images": {}, "built_digest": BUILT, **scenario}))
    aws.add_tool("docker", FAKE_DOCKER)
    env = {"REGISTRY": "registry.invalid", "VARIANT": "cpu", "GITHUB_SHA": SHA, "GITHUB_REF": ref,
           "GITHUB_REF_NAME": ref.rsplit("/", 1)[-1]}  # fmt: skip
    return aws.run("ecr-image.sh", tmp_path, **env), aws


def builds(aws: FakeAws) -> list[list[str]]:
    return [call for call in aws.calls() if call[:3] == ["docker", "buildx", "build"]]


def test_ecr_builds_and_pushes_the_commits_image_once_with_the_layer_cache(tmp_path):
    proc, aws = ecr_image(tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert aws.scenario["images"] == {f"{SHA}-cpu": BUILT}
    (build,) = builds(aws)
    assert "--push" in build and build[build.index("--tag") + 1] == f"registry.invalid/visapp:{SHA}-cpu"
    assert "type=registry,ref=registry.invalid/visapp-cache:cpu" in build
    cache_to = build[build.index("--cache-to") + 1]
    assert cache_to.startswith("type=registry,ref=registry.invalid/visapp-cache:cpu,mode=max,image-manifest=true")
    assert f"| - | {SHA}-cpu | {BUILT} |" in (tmp_path / "summary.md").read_text()


def test_ecr_a_rerun_finds_the_image_and_pushes_nothing(tmp_path):
    proc, aws = ecr_image(tmp_path, images={f"{SHA}-cpu": BUILT})

    assert proc.returncode == 0, proc.stderr
    assert builds(aws) == [] and not any(call[1] == "put-image" for call in aws.calls())
    assert "exists" in proc.stderr and "not built again" in proc.stderr


def test_ecr_a_version_tag_names_the_commits_image_without_building_it_again(tmp_path):
    manifest = {
        "imageManifest": '{"config": "main"}',
        "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
    }
    proc, aws = ecr_image(tmp_path, "refs/tags/yolo@v3.0.0", images={f"{SHA}-cpu": OTHER}, manifests={OTHER: manifest})

    assert proc.returncode == 0, proc.stderr
    assert aws.scenario["images"] == {f"{SHA}-cpu": OTHER, "yolo-v3.0.0-cpu": OTHER}
    assert builds(aws) == []

    (tmp_path / "again").mkdir()
    tagged = aws.scenario["images"]
    again, aws = ecr_image(tmp_path / "again", "refs/tags/yolo@v3.0.0", images=tagged, manifests={OTHER: manifest})
    assert again.returncode == 0, again.stderr
    assert "already names" in again.stderr and not any(call[1] == "put-image" for call in aws.calls())


def test_ecr_a_version_tag_that_names_another_image_fails_clearly(tmp_path):
    manifest = {"imageManifest": "{}", "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json"}
    images = {f"{SHA}-cpu": BUILT, "yolo-v3.0.0-cpu": OTHER}
    proc, aws = ecr_image(tmp_path, "refs/tags/yolo@v3.0.0", images=images, manifests={BUILT: manifest})

    assert proc.returncode == 1
    assert f"yolo-v3.0.0-cpu already names {OTHER}, not {BUILT}" in proc.stderr and "immutable" in proc.stderr
    assert aws.scenario["images"] == images


def test_ecr_an_image_pushed_meanwhile_by_another_run_is_taken_as_it_is(tmp_path):
    proc, aws = ecr_image(tmp_path, pushed_meanwhile=OTHER)

    assert proc.returncode == 0, proc.stderr
    assert "pushed by another run meanwhile" in proc.stderr and len(builds(aws)) == 1
    assert f"| - | {SHA}-cpu | {OTHER} |" in (tmp_path / "summary.md").read_text()


def test_ecr_a_failed_build_fails_the_job(tmp_path):
    proc, aws = ecr_image(tmp_path, build_fails=True)

    assert proc.returncode == 1 and "failed" in proc.stderr
    assert aws.scenario["images"] == {}


def test_ecr_refuses_a_tag_that_is_not_a_version(tmp_path):
    proc, aws = ecr_image(tmp_path, "refs/tags/yolo#prod#3")

    assert proc.returncode == 1 and "not a version tag" in proc.stderr
    assert aws.calls() == []
