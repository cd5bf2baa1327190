"""The published OpenAPI document: what it says, that it sits behind the API key, and that the endpoint keeps to it.

The unit tests read the document in-process. The integration tests run one Serve application
(`tiny`, an API key, route prefix `/api`) on a real Ray cluster over real HTTP (the replica's real
`PolicyRuntime`), and validate replies against the document it serves with schemathesis: chosen
requests for every documented status we can provoke, then generated ones for every operation,
schema-conforming and (for the bodies) schema-breaking, bounded by `MAX_EXAMPLES` per operation and
a per-example deadline. No reply may be a 5xx or fall outside the documented statuses, content
types, headers and schemas, and no operation may answer without the key.
"""

from datetime import timedelta

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from ray import serve
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks

from serving.app import build_app, openapi_document
from serving.config import ServingConfig, ServingLimits
from serving.schemas import ChatCompletionRequest, ChatCompletionResponse, GenerateRequest, GenerateResponse
from tests.serve_fixtures import serve_http

API_KEY = "openapi-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_EXAMPLES = 25
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
OPERATIONS = [  # (method, path, mode): the body routes also get negative bodies, ones that break the schema
    ("POST", "/v1/generate", POSITIVE),
    ("POST", "/v1/generate", NEGATIVE),
    ("POST", "/v1/chat/completions", POSITIVE),
    ("POST", "/v1/chat/completions", NEGATIVE),
    ("GET", "/v1/models", POSITIVE),
    ("GET", "/v1/policy", POSITIVE),
    ("GET", "/healthz", POSITIVE),
]
BODY_ROUTES = [
    ("/v1/generate", GenerateRequest, GenerateResponse),
    ("/v1/chat/completions", ChatCompletionRequest, ChatCompletionResponse),
]
CHECKS = [
    not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.ignored_auth,
]


# ---------------------------------------------------------------- the document (no Ray)


@pytest.mark.parametrize(("path", "request_model", "response_model"), BODY_ROUTES)
def test_document_publishes_bodies_replies_and_errors(path, request_model, response_model):
    document = openapi_document(secured=True, root_path="/api")
    operation = document["paths"][path]["post"]
    schemas = document["components"]["schemas"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body == f"#/components/schemas/{request_model.__name__}"
    assert set(schemas[request_model.__name__]["properties"]) == set(request_model.model_fields)
    reply = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert reply == f"#/components/schemas/{response_model.__name__}"
    assert set(operation["responses"]) == {"200", "400", "401", "413", "422", "503"}
    assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ValidationErrorResponse"
    )
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    refs = [ref for ref in _refs(document) if ref.startswith("#/components/schemas/")]
    assert {ref.rsplit("/", 1)[1] for ref in refs} <= set(schemas), "a $ref points outside the document"


def test_document_declares_the_key_only_when_set_and_the_route_prefix():
    secured = openapi_document(secured=True, root_path="/api")
    assert secured["security"] == [{"apiKey": []}]
    assert secured["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    assert secured["paths"]["/healthz"]["get"]["security"] == []
    assert secured["servers"] == [{"url": "/api"}]
    assert "/openapi.json" not in secured["paths"] and "/docs" not in secured["paths"]
    open_document = openapi_document(secured=False, root_path="/")
    assert "security" not in open_document and "servers" not in open_document
    assert "securitySchemes" not in open_document["components"]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


# ---------------------------------------------------------------- the served document (real Ray, Serve, HTTP)

SAY_HI = [{"role": "user", "content": "Say hi."}]
CHOSEN = [  # (label, path, body, status): requests whose reply is known, each validated against the document
    ("messages", "/v1/generate", {"messages": SAY_HI, "max_new_tokens": 4, "temperature": 0.7, "seed": 1}, 200),
    ("ids, greedy", "/v1/generate", {"prompt_token_ids": [1, 2, 3], "temperature": 0.0, "stop": ["!"]}, 200),
    ("over max_new_tokens_limit", "/v1/generate", {"prompt_token_ids": [1], "max_new_tokens": 9}, 400),
    ("tiny temperature", "/v1/generate", {"prompt_token_ids": [1], "temperature": 1e-40}, 422),  # was a 500 (NaN)
    ("two prompts", "/v1/generate", {"prompt_token_ids": [1], "messages": SAY_HI}, 422),
    ("over max_request_bytes", "/v1/generate", {"prompt_token_ids": [1] * 40_000}, 413),
    ("n and logprobs", "/v1/chat/completions", {"model": "tiny", "messages": SAY_HI, "n": 2, "logprobs": True}, 200),
    ("over max_n", "/v1/chat/completions", {"model": "tiny", "messages": SAY_HI, "n": 17}, 400),
]


@pytest.fixture(scope="module")
def url():
    config = ServingConfig(
        model="tiny",
        app_name="openapi",
        route_prefix="/api",
        api_key=API_KEY,
        max_new_tokens_limit=8,
        default_max_new_tokens=4,
        batch_max_wait_s=0.02,
        limits=ServingLimits(max_request_bytes=64 * 1024),
    )
    with serve_http(num_cpus=2) as root:
        serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
        yield root + config.route_prefix


@pytest.fixture(scope="module")
def served_schema(url):
    # Bodies only: the key is sent as configured; `ignored_auth` probes each operation without it and with a wrong one.
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    return schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH, timeout=30, config=config)


@pytest.mark.integration
@pytest.mark.slow
def test_openapi_and_docs_need_the_key(url):
    assert httpx.get(f"{url}/healthz").status_code == 200
    for path in ("/openapi.json", "/docs"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            reply = httpx.get(f"{url}{path}", headers=headers)
            assert reply.status_code == 401, (path, reply.text)
            assert reply.json()["error"]["code"] == "unauthorized"
    document = httpx.get(f"{url}/openapi.json", headers=AUTH)
    assert document.status_code == 200 and "/v1/generate" in document.json()["paths"]
    assert document.json()["servers"] == [{"url": "/api"}]
    docs = httpx.get(f"{url}/docs", headers=AUTH)
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in docs.text and '"/v1/chat/completions"' in docs.text  # the document is inlined
    assert httpx.get(f"{url}/redoc", headers=AUTH).status_code == 404


@pytest.mark.integration
@pytest.mark.slow
def test_the_served_document_has_every_operation(served_schema):
    listed = {(result.ok().method.upper(), result.ok().path) for result in served_schema.get_all_operations()}
    assert listed == {(method, path) for method, path, _ in OPERATIONS}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("path", "body", "status"), [c[1:] for c in CHOSEN], ids=[c[0] for c in CHOSEN])
def test_chosen_requests_get_documented_replies(served_schema, path, body, status):
    reply = served_schema[path]["POST"].Case(body=body).call_and_validate(headers=AUTH, checks=CHECKS, timeout=60)
    assert reply.status_code == status, reply.text


# schemathesis' own pytest loader (`schemathesis.pytest.from_fixture`) fails on pytest 9 (it sets
# `request.node._nodeid`), so each operation runs its strategy under `hypothesis.given` here.
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS])
def test_generated_requests_get_documented_replies(served_schema, method, path, mode):
    @given(case=served_schema[path][method].as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=timedelta(seconds=20),
        database=None,
        derandomize=True,  # the same examples in every CI run: a failure reproduces
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def exchange(case):
        case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=60)

    exchange()
