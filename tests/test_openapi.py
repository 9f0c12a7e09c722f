"""The OpenAPI document is made for client generators: readable and unique operation ids, a response schema
on every operation, and the problem+json errors each one can answer declared; and what the routes answer
is what the document says."""

from __future__ import annotations

import re
import uuid
import warnings
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from conftest import Account
from labcloud.api.app import create_app
from labcloud.api.openapi import Problem
from labcloud.api.worker_schemas import Assignment
from labcloud.client import models
from labcloud.registry import app_to_public
from labcloud.registry.spec_parts import Resources
from labcloud.services import claims
from labcloud.settings import Settings
from test_tes import spec_file

pytestmark = pytest.mark.db_agnostic  # the document and the answers do not depend on the database

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
READABLE = re.compile(r"^[a-z]+(_[a-z0-9]+)*$")
PROBLEM_REF = "#/components/schemas/Problem"
# the one error answer that is not a problem: a worker's log chunk that leaves a gap says where to send from
PLAIN_JSON_ERRORS = {("post", "/api/v1/worker/jobs/{job_id}/log", "409")}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document as a fresh app generates it (no database needed), with FastAPI's warnings kept."""
    home = tmp_path_factory.mktemp("openapi") / "home"
    app = create_app(Settings(home=home, secret_key="openapi-" + "x" * 40), dispatch=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = app.openapi()
    assert not [str(w.message) for w in caught if "Operation ID" in str(w.message)]
    return doc


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if method in METHODS
    ]


def test_operation_ids_are_unique_and_read_well(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)) > 50
    for method, path, op in operations(document):
        name = op["operationId"]
        assert READABLE.match(name), (method, path, name)
        assert "api_v1" not in name and not name.endswith(tuple(f"_{m}" for m in METHODS)), name
        assert name.startswith("worker_") == path.startswith("/api/v1/worker/"), name
    by_route = {(method, path): op["operationId"] for method, path, op in operations(document)}
    assert by_route[("post", "/api/v1/jobs")] == "submit_job"
    assert by_route[("get", "/api/v1/jobs")] == "list_jobs"
    assert by_route[("get", "/api/v1/jobs/{job_id}")] == "get_job"
    assert by_route[("post", "/api/v1/jobs/{job_id}/cancel")] == "cancel_job"
    assert by_route[("get", "/api/v1/jobs/{job_id}/logs")] == "get_job_log"
    assert by_route[("get", "/api/v1/apps")] == "list_apps"
    assert by_route[("get", "/api/v1/apps/{app}")] == "get_app"
    assert by_route[("put", "/api/v1/files/{path}")] == "upload_file"
    assert by_route[("get", "/api/v1/files/{path}")] == "download_file"
    assert by_route[("post", "/api/v1/uploads")] == "create_upload"
    assert by_route[("post", "/api/v1/workers")] == "register_worker"
    assert by_route[("post", "/api/v1/worker/claim")] == "worker_claim"
    # the form body of the login is named after its operation too
    assert "Body_login" in document["components"]["schemas"]


def test_every_operation_has_a_response_schema(document: dict[str, Any]) -> None:
    """Each success answer has content with a schema, or is empty on purpose (204, or headers only)."""
    for method, path, op in operations(document):
        successes = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        assert successes, f"{method} {path}"
        for status, response in successes.items():
            where = f"{method} {path} {status}"
            if "content" not in response:
                assert status == "204" or response.get("headers"), where
                continue
            for media_type, body in response["content"].items():
                assert body.get("schema"), f"{where} {media_type}"
    schemas = document["components"]["schemas"]
    by_id = {op["operationId"]: op for _, _, op in operations(document)}

    def model(name: str, status: str = "200") -> str:
        schema = by_id[name]["responses"][status]["content"]["application/json"]["schema"]
        return str(schema.get("$ref", "")).rsplit("/", 1)[-1]

    assert model("list_apps") == "AppList" and model("get_app") == "AppOut"
    assert model("healthz") == "HealthOut" and model("readyz") == "ReadyOut"
    assert model("worker_claim") == "ClaimOut" and model("worker_take") == "ClaimOut"
    assert model("worker_finish") == "StateOut" and model("worker_log", "409") == "LogSizeOut"
    assert schemas["Assignment"]["properties"]["resources"]["$ref"].endswith("/ResourcesOut")
    assert set(by_id["download_file"]["responses"]) >= {"200", "206", "304", "307"}
    assert "text/event-stream" in by_id["get_job_log"]["responses"]["200"]["content"]
    assert "Location" in by_id["create_upload"]["responses"]["201"]["headers"]
    assert model("service_info") == "TesServiceInfo" and model("create_task") == "TesCreateTaskResponse"
    assert model("list_tasks") == "TesListTasksResponse" and model("get_task") == "TesTask"
    assert model("cancel_task") == "TesCancelTaskResponse"


def test_every_operation_declares_its_problems(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail"}
    assert schemas["Problem"]["properties"]["errors"]["anyOf"][0]["items"]["$ref"].endswith("/ProblemField")
    assert "HTTPValidationError" not in schemas  # FastAPI's own shape, which this API never answers

    def problem(op: dict[str, Any], status: str) -> bool:
        content = op["responses"].get(status, {}).get("content", {})
        return content.get("application/problem+json", {}).get("schema", {}).get("$ref") == PROBLEM_REF

    for method, path, op in operations(document):
        where = f"{method} {path}"
        assert problem(op, "default"), where
        if op.get("security"):
            assert problem(op, "401"), where
            assert problem(op, "403") != path.startswith("/api/v1/worker/"), where
        if any(p["in"] == "path" for p in op.get("parameters", [])):
            assert problem(op, "404"), where
        if op.get("parameters") or op.get("requestBody"):
            assert problem(op, "422"), where
        if op.get("requestBody"):
            assert problem(op, "413"), where
        for status in op["responses"]:
            if status.startswith(("4", "5")) and (method, path, status) not in PLAIN_JSON_ERRORS:
                assert problem(op, status), f"{where} {status}"

    by_id = {op["operationId"]: op for _, _, op in operations(document)}
    assert problem(by_id["login"], "401") and problem(by_id["login"], "429")
    for name in (
        "cancel_job",
        "delete_job",
        "move_file",
        "create_user",
        "register_worker",
        "append_to_upload",
    ):
        assert problem(by_id[name], "409"), name
    assert problem(by_id["append_to_upload"], "460") and problem(by_id["upload_file"], "413")
    for name in ("create_task", "list_tasks", "get_task"):  # a task or a query that is not valid
        assert problem(by_id[name], "400") and problem(by_id[name], "401"), name
    assert problem(by_id["get_task"], "404") and problem(by_id["cancel_task"], "404")
    assert not by_id["get_upload_capabilities"].get("security")  # tus clients ask before logging in
    assert set(by_id["get_upload_capabilities"]["responses"]) == {"204", "default"}


# The GA4GH TES 1.1 schemas and this document's: the same fields, the same required ones (but a task's
# executors, which its MINIMAL view leaves out), the same types. service-info's own fields are the
# service-info spec's (tests/test_tes.py writes down its required ones).
TES_SCHEMAS = {
    "tesTask": "TesTask",
    "tesInput": "TesInput",
    "tesOutput": "TesOutput",
    "tesResources": "TesResources",
    "tesExecutor": "TesExecutor",
    "tesTaskLog": "TesTaskLog",
    "tesExecutorLog": "TesExecutorLog",
    "tesOutputFileLog": "TesOutputFileLog",
    "tesCreateTaskResponse": "TesCreateTaskResponse",
    "tesListTasksResponse": "TesListTasksResponse",
    "tesCancelTaskResponse": "TesCancelTaskResponse",
}


def test_the_tes_answers_are_described_as_the_spec_has_them(document: dict[str, Any]) -> None:
    spec = yaml.safe_load(spec_file().read_text())["components"]["schemas"]
    ours = document["components"]["schemas"]

    def kind(schema: dict[str, Any], components: dict[str, Any]) -> Any:
        """An object's schema is named by a reference; a string's (an enum) may be either."""
        if "$ref" in schema:
            named = components[schema["$ref"].rsplit("/", 1)[-1]]
            return "object" if named.get("type") == "object" else kind(named, components)
        return schema.get("type"), kind(schema["items"], components) if "items" in schema else None

    for theirs, name in TES_SCHEMAS.items():
        wanted, given = spec[theirs], ours[name]
        assert set(given.get("properties", {})) == set(wanted.get("properties", {})), name
        required = set(wanted.get("required", [])) - ({"executors"} if name == "TesTask" else set())
        assert set(given.get("required", [])) == required, name
        for field, schema in given.get("properties", {}).items():
            assert "null" not in str(schema), (name, field)  # left out when absent, never null
            assert kind(schema, ours) == kind(wanted["properties"][field], spec), (name, field)
    info = ours["TesServiceInfo"]["properties"]
    assert set(info) >= set(spec["tesServiceInfo"]["allOf"][1]["properties"])
    assert ours["TesServiceType"]["properties"]["artifact"]["const"] == "tes"
    assert ours["TesTask"]["properties"]["state"]["enum"] == spec["tesState"]["enum"]


def test_the_problems_answered_are_the_declared_schema(client: TestClient, user: Account) -> None:
    answers = [
        client.get("/api/v1/jobs/01a24b81-0000-7000-8000-000000000000", headers=user.headers),
        client.get("/api/v1/jobs/not-a-uuid", headers=user.headers),
        client.post("/api/v1/jobs", json={"app": "hello", "params": {"times": 0}}, headers=user.headers),
        client.get("/api/v1/apps"),
        client.get("/api/v1/users", headers=user.headers),
    ]
    assert [a.status_code for a in answers] == [404, 422, 422, 401, 403]
    for answer in answers:
        assert answer.headers["content-type"] == "application/problem+json"
        problem = Problem.model_validate(answer.json())
        assert problem.status == answer.status_code and problem.detail
    assert Problem.model_validate(answers[2].json()).errors[0].loc == ["body", "params", "times"]  # type: ignore[index]


def test_the_apps_routes_answer_exactly_what_the_registry_shows(
    client: TestClient, app: Any, admin: Account, user: Account
) -> None:
    ctx = app.state.ctx
    engine_problem = ctx.container_problem()  # the container apps say why they cannot run here, if so
    listed = client.get("/api/v1/apps", headers=user.headers).json()
    assert listed == {
        "items": [app_to_public(spec, engine_problem) for spec in ctx.apps.apps()]
    }  # no problems
    spikes = client.get("/api/v1/apps/spikes", headers=user.headers).json()
    assert spikes == app_to_public(ctx.apps.get("spikes"))
    as_admin = client.get("/api/v1/apps", headers=admin.headers).json()
    assert as_admin["problems"] == [] and as_admin["items"] == listed["items"]


def test_the_python_clients_models_have_the_fields_the_document_gives(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    pairs = {
        models.App: "AppOut",
        models.AppVersion: "VersionOut",
        models.Entrypoint: "EntrypointOut",
        models.InputSlot: "InputOut",
        models.Resources: "ResourcesOut",
        models.JobInfo: "JobDetail",
        models.JobEvent: "JobEventOut",
        models.OutputFile: "OutputFile",
        models.FileInfo: "FileOut",
        models.User: "UserOut",
        models.StorageUsage: "UsageOut",
        models.ProjectInfo: "ProjectOut",
        models.ProjectDetail: "ProjectDetail",
        models.ProjectMember: "MemberOut",
        models.JoinCode: "JoinCodeOut",
        models.Quota: "QuotaOut",
        models.QuotaRequest: "QuotaRequestOut",
        models.UsageRow: "ProjectUsageRow",
    }
    for model, name in pairs.items():
        assert set(model.model_fields) == set(schemas[name]["properties"]), (model.__name__, name)


def test_the_served_document_is_the_same(client: TestClient, document: dict[str, Any]) -> None:
    served = client.get("/api/v1/openapi.json").json()
    assert served["paths"].keys() == document["paths"].keys()
    assert served["components"]["schemas"]["Problem"] == document["components"]["schemas"]["Problem"]


def test_an_assignment_keeps_every_key_the_claim_gives() -> None:
    """A response model drops what it does not name: the worker's assignment must name all of it."""
    job = SimpleNamespace(
        id=uuid.uuid4(),
        attempts=1,
        lease_expires_at=None,
        app="hello",
        version="1.0",
        entrypoint="greet",
        spec={},
        params={},
        env={},
        resources=Resources(),
        image=None,
        state="staging",
    )
    claimed = SimpleNamespace(
        job=job, token="lcj_x", token_expires_at=datetime.now(UTC), inputs={}, task=None
    )
    assert set(claims.assignment(claimed)) == set(Assignment.model_fields)
