"""The running server against its own OpenAPI schema (schemathesis): no 5xx, and every answer documented.

One `visapp serve --no-worker` from a Git repository (so the /models endpoints answer, with no versions yet):
nothing trains, a queued training just waits in the queue. Every operation gets a few generated requests
that fit its schema (positive) and a few that do not (negative), derandomized and without an example
database; the job operations also run against one real, ready job (uploaded by the fixture), so their
success paths (200, 202) and conflicts (409) are checked too, not only 404.

schemathesis' own pytest loader (`schemathesis.pytest.from_fixture`) does not run under pytest 9 (it sets
`Function._nodeid`, which pytest 9 no longer has), so each operation is a parametrized test that drives the
operation's Hypothesis strategy itself; `test_the_operations_tested_are_all_the_schema_has` keeps that list
whole.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from service.conftest import FAST, OTHER_TOKEN, TOKEN, Service, client, upload

pytestmark = pytest.mark.integration

EXAMPLES = 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPERATIONS = [
    ("POST", "/upload-dataset"),
    ("POST", "/train-async/{job_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("GET", "/jobs/{job_id}"),
    ("DELETE", "/jobs/{job_id}"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{job_id}/report"),
    ("GET", "/jobs/{job_id}/figures/{name}"),
    ("GET", "/jobs/{job_id}/lineage"),
    ("GET", "/jobs/{job_id}/evaluation"),
    ("GET", "/jobs/{job_id}/audit"),
    ("POST", "/jobs/{job_id}/predict"),
    ("GET", "/download/model/{job_id}"),
    ("GET", "/dataset/metadata/{job_id}"),
    ("GET", "/health"),
    ("GET", "/models"),
    ("GET", "/models/{version}/download"),
    ("POST", "/models/{version}/predict"),
]
JOB_OPERATIONS = [(method, path) for method, path in OPERATIONS if "{job_id}" in path]
# Operations with something a request can get wrong against the schema (a body, a bounded query parameter); the
# others take only free strings, so no request can be invalid for them (Hypothesis finds none to generate).
NEGATABLE = [
    ("POST", "/upload-dataset"),
    ("POST", "/train-async/{job_id}"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{job_id}/lineage"),
    ("GET", "/download/model/{job_id}"),
    ("GET", "/models/{version}/download"),
]
# What the schema cannot say: an upload is a ZIP or tar of a VOC dataset; train params have rules beyond their types
# and ranges (a batch of 0, split ratios); a paging cursor names a job of the caller. A schema-valid request that
# breaks one is refused, with one of these documented answers (schemathesis' `positive_data_acceptance` would call
# it a bug). A body that is not JSON at all is a 400 (FastAPI cannot parse it), documented too.
CONTENT_REFUSALS = {
    ("POST", "/upload-dataset"): {400, 413, 415, 422},
    ("POST", "/train-async/{job_id}"): {400, 422},
    ("GET", "/jobs"): {422},
}


@dataclass
class Served:
    schema: schemathesis.BaseSchema
    job_id: str  # a ready job of TOKEN
    doomed_id: str  # another, for the deletes


@pytest.fixture(scope="module")
def served(tmp_path_factory, mlflow_server, dataset_zip):
    base = tmp_path_factory.mktemp("schema")
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "empty"]):
        subprocess.run(["git", *args], cwd=base, check=True, capture_output=True)
    service = Service(
        base,
        {
            "VISAPP_API_TOKEN": f"{TOKEN},{OTHER_TOKEN}",
            "VISAPP_STORE_URL": (base / "jobs").as_uri(),
            "VISAPP_QUEUE_URL": f"sqlite:///{base / 'queue.db'}",
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            **FAST,
        },
    )
    try:
        api = service.api(worker=False)
        with client(api.url) as http:
            answers = [upload(http, dataset_zip) for _ in range(2)]
        assert [answer.status_code for answer in answers] == [201, 201], [answer.text for answer in answers]
        schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
        yield Served(schema, *(answer.json()["job_id"] for answer in answers))
    finally:
        service.stop()


def check(operation, mode: GenerationMode, path_parameters: dict[str, str] | None = None) -> None:
    """Generated requests of `mode`, each sent with the token and checked by schemathesis' default checks (no
    5xx; status code, content type, headers and body as documented; valid data accepted, invalid refused)."""
    strategy = operation.as_strategy(generation_mode=mode, headers=AUTH, path_parameters=path_parameters)
    # Invalid requests are judged by schemathesis' own check (refused with a 4xx); valid ones may meet a rule the
    # schema cannot say, answered as CONTENT_REFUSALS documents.
    positive = mode == GenerationMode.POSITIVE
    refusals = CONTENT_REFUSALS.get((operation.method.upper(), operation.path), set()) if positive else set()

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        if not refusals:
            case.call_and_validate(headers=AUTH)
            return
        response = case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])
        assert response.status_code < 400 or response.status_code in refusals | {401, 404, 409, 429}, response.text

    run()


def test_the_operations_tested_are_all_the_schema_has(served):
    found = {(op.method.upper(), op.path) for op in (r.ok() for r in served.schema.get_all_operations())}
    assert found == set(OPERATIONS)


def test_every_operation_but_health_declares_the_token(served):
    schema = served.schema.raw_schema
    assert schema["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a token of VISAPP_API_TOKEN",
    }
    for method, path in OPERATIONS:
        security = schema["paths"][path][method.lower()].get("security")
        assert security == (None if path == "/health" else [{"token": []}]), (method, path)
        assert "401" in schema["paths"][path][method.lower()]["responses"]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_generated_requests_get_documented_answers(served, method, path):
    check(served.schema[path][method], GenerationMode.POSITIVE)


@pytest.mark.parametrize(("method", "path"), NEGATABLE, ids=[f"{m} {p}" for m, p in NEGATABLE])
def test_generated_invalid_requests_are_refused_as_documented(served, method, path):
    check(served.schema[path][method], GenerationMode.NEGATIVE)


@pytest.mark.parametrize(("method", "path"), JOB_OPERATIONS, ids=[f"{m} {p}" for m, p in JOB_OPERATIONS])
def test_generated_requests_on_a_real_job_get_documented_answers(served, method, path):
    job_id = served.doomed_id if method == "DELETE" else served.job_id
    check(served.schema[path][method], GenerationMode.POSITIVE, {"job_id": job_id})


def test_every_job_operation_is_linked_from_the_upload_and_the_job_list(served):
    """The schema's links say where a job id comes from, so that a client (and the stateful phase below) can chain
    an upload, or a page of jobs, to every operation on a job."""
    raw = served.schema.raw_schema
    operation_ids = {
        (method.upper(), path): operation["operationId"]
        for path, operations in raw["paths"].items()
        for method, operation in operations.items()
    }
    unlinked = {"/jobs/{job_id}/figures/{name}", "/jobs/{job_id}/predict"}  # a figure's name, an image: not in answers
    wanted = {operation_ids[op] for op in JOB_OPERATIONS if op[1] not in unlinked}
    upload_links = raw["paths"]["/upload-dataset"]["post"]["responses"]["201"]["links"]
    list_links = raw["paths"]["/jobs"]["get"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in upload_links.values()} == wanted
    assert {link["operationId"] for link in list_links.values()} == wanted


def test_stateful_sequences_of_requests_get_documented_answers(served):
    """schemathesis' stateful phase: sequences that follow the schema's links (a page of jobs -> a job's train,
    cancel, report, lineage, metadata, delete, ...) on the real store, each answer checked as above. Last in the
    module: it may delete the jobs the other tests use."""
    refusals = {status for statuses in CONTENT_REFUSALS.values() for status in statuses}

    class Machine(served.schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": AUTH}

        def validate_response(self, response, case, **kwargs):
            # Data validity is judged by the tests above; here, what each answer in a sequence is.
            excluded = [positive_data_acceptance, negative_data_rejection]
            case.validate_response(response, excluded_checks=excluded, headers=AUTH)
            assert response.status_code < 500, response.text
            assert response.status_code < 400 or response.status_code in refusals | {401, 404, 409, 429}

    Machine.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=6,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
