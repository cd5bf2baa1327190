"""Integration tests of the policy endpoint: real Ray, real Serve, real HTTP (httpx, openai client), handles.

One Ray cluster and one Serve instance for the module, applications on route prefixes:
`/tiny-<engine>` (2 replicas, small queue; every test of it runs on the transformers engine and
again on vLLM), `/secure` (API key; tests/serving/test_serve_cli.py checks it with vLLM too),
`/vlm` (tiny-vlm, small image limits).
"""

import asyncio
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import ray
from openai import OpenAI
from PIL import Image
from ray import serve

from learner.export import write_weights_file
from learner.models import load_policy
from serving.app import DEPLOYMENT_NAME, REGISTRY_ACTOR, build_app
from serving.config import ServingConfig, ServingLimits
from serving.images import to_data_url
from serving.limits import RequestError
from serving.weights import StaleVersionError
from tests.serve_fixtures import serve_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]
API_KEY = "test-key-123"
PROMPT = {
    "messages": [{"role": "user", "content": "Say something."}],
    "max_new_tokens": 6,
    "temperature": 1.0,
    "seed": 11,
}


@dataclass
class App:
    handle: object
    url: str
    name: str


def _deploy(config: ServingConfig, root: str) -> App:
    handle = serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
    return App(handle, root + config.route_prefix, config.app_name)


@pytest.fixture(scope="module")
def root():
    with serve_http(num_cpus=8) as url:
        yield url


@pytest.fixture(scope="module", params=["transformers", "vllm"])
def tiny(root, request):
    app = _deploy(
        ServingConfig(
            model="tiny",
            engine=request.param,
            app_name=f"tiny-{request.param}",
            route_prefix=f"/tiny-{request.param}",
            num_replicas=2,
            max_new_tokens_limit=64,
            default_max_new_tokens=16,
            limits=ServingLimits(max_queued_requests=6, max_request_bytes=1_000_000),
        ),
        root,
    )
    yield app
    serve.delete(app.name)  # frees the replicas (vLLM's engine processes) before the next engine's


@pytest.fixture(scope="module")
def secure(root):
    return _deploy(ServingConfig(model="tiny", app_name="secure", route_prefix="/secure", api_key=API_KEY), root)


@pytest.fixture(scope="module")
def vlm(root):
    limits = ServingLimits(max_image_bytes=20_000, max_image_pixels=100 * 100, max_images=2)
    return _deploy(ServingConfig(model="tiny-vlm", app_name="vlm", route_prefix="/vlm", limits=limits), root)


def _image(width: int, height: int) -> str:
    return to_data_url(
        Image.fromarray(np.random.RandomState(width).randint(0, 255, (height, width, 3), dtype=np.uint8))
    )


def _flat(width: int, height: int) -> str:
    return to_data_url(Image.new("RGB", (width, height), (200, 30, 30)))


def _assert_serves(app: App) -> None:
    """A normal request still succeeds (the replica was neither killed nor wedged)."""
    reply = httpx.post(f"{app.url}/v1/generate", json=PROMPT, timeout=60)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["output_token_ids"]) == 6


# ---------------------------------------------------------------- happy paths


def test_generate_over_http_and_handle_agree(tiny):
    reply = httpx.post(f"{tiny.url}/v1/generate", json=PROMPT, timeout=60).json()
    assert reply["finish_reason"] == "length" and len(reply["logprobs"]) == len(reply["output_token_ids"]) == 6
    assert reply["policy_version"] == 0 and set(reply["timing"]) == {"queue_s", "generate_s"}
    by_handle = tiny.handle.generate.remote(PROMPT).result()
    assert by_handle["output_token_ids"] == reply["output_token_ids"]
    assert by_handle["prompt_token_ids"] == reply["prompt_token_ids"]
    by_ids = tiny.handle.generate.remote(
        {"prompt_token_ids": reply["prompt_token_ids"], "max_new_tokens": 6, "temperature": 1.0, "seed": 11}
    ).result()
    assert by_ids["output_token_ids"] == reply["output_token_ids"]


def test_openai_client_chat_with_n_logprobs_and_usage(tiny):
    client = OpenAI(base_url=f"{tiny.url}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["tiny"]
    completion = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Hi"}],
        n=2,
        max_tokens=5,
        logprobs=True,
        seed=3,
        temperature=1.0,
    )
    assert len(completion.choices) == 2
    assert completion.choices[0].message.content != completion.choices[1].message.content
    assert completion.usage.completion_tokens == sum(len(c.logprobs.content) for c in completion.choices) == 10
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 10
    assert all(entry.logprob <= 0 for entry in completion.choices[0].logprobs.content)


def test_policy_route_reports_model_version_device_replica(tiny):
    info = httpx.get(f"{tiny.url}/v1/policy", timeout=30).json()
    assert (info["model"], info["device"], info["is_vlm"]) == ("tiny", "cpu", False)
    assert info["engine"] == tiny.name.removeprefix("tiny-")
    assert info["replica"] and info["version"] >= 0


def test_concurrent_requests_are_batched(tiny):
    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(client.post(f"{tiny.url}/v1/generate", json={**PROMPT, "seed": i}) for i in range(6))
            )

    assert all(r.status_code == 200 for r in asyncio.run(burst()))
    infos = tiny.handle.broadcast("info").results()
    assert max(info["largest_batch"] for info in infos) > 1


def test_openai_client_sends_images_to_the_vlm(vlm):
    client = OpenAI(base_url=f"{vlm.url}/v1", api_key="unused")
    completion = client.chat.completions.create(
        model="tiny-vlm",
        max_tokens=4,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _image(32, 24)}},
                    {"type": "text", "text": "What is shown?"},
                ],
            }
        ],
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    text_only = load_policy("tiny-vlm").tokenizer("What is shown?")["input_ids"]
    assert completion.usage.prompt_tokens > len(text_only) + 10  # image tokens were inserted


# ---------------------------------------------------------------- bad input


BAD_TINY = [
    ("malformed json", "/v1/generate", {"content": b"{not json"}, 422, "validation"),
    ("missing prompt", "/v1/generate", {"json": {"max_new_tokens": 3}}, 422, "validation"),
    ("wrong type", "/v1/generate", {"json": {"prompt_token_ids": "abc"}}, 422, "validation"),
    ("unknown field", "/v1/generate", {"json": {**PROMPT, "temprature": 2}}, 422, "validation"),
    ("max_new_tokens", "/v1/generate", {"json": {**PROMPT, "max_new_tokens": 65}}, 400, "max_new_tokens_limit"),
    ("context", "/v1/generate", {"json": {"prompt_token_ids": [1] * 8190, "max_new_tokens": 8}}, 400, "context_length"),
    ("vocab", "/v1/generate", {"json": {"prompt_token_ids": [10**9]}}, 400, "vocab_size"),
    ("body bytes", "/v1/generate", {"content": b"[" + b"1," * 600_000 + b"1]"}, 413, "max_request_bytes"),
    (
        "image to text model",
        "/v1/generate",
        {
            "json": {
                **PROMPT,
                "images": [_image(8, 8)],
                "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
            }
        },
        400,
        "images",
    ),
    (
        "chat n",
        "/v1/chat/completions",
        {"json": {"model": "tiny", "n": 99, "messages": [{"role": "user", "content": "x"}]}},
        400,
        "max_n",
    ),
    (
        "chat stream",
        "/v1/chat/completions",
        {"json": {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "x"}]}},
        422,
        "validation",
    ),
]


@pytest.mark.parametrize("case", BAD_TINY, ids=[c[0] for c in BAD_TINY])
def test_bad_input_gets_a_json_error_and_the_replica_keeps_serving(tiny, case):
    _, path, kwargs, status, code = case
    reply = httpx.post(f"{tiny.url}{path}", timeout=60, **kwargs)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code
    _assert_serves(tiny)


def _image_request(*images: str) -> dict:
    parts = [{"type": "image"} for _ in images] + [{"type": "text", "text": "describe"}]
    return {"messages": [{"role": "user", "content": parts}], "images": list(images), "max_new_tokens": 3}


BAD_VLM = [
    ("pixels", _image_request(_flat(101, 100)), 413, "max_image_pixels"),
    ("bytes", _image_request(_image(99, 99) + "A" * 30_000), 413, "max_image_bytes"),
    ("corrupt", _image_request("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"), 400, "image_decode"),
    ("count mismatch", {**_image_request(_image(10, 10)), "images": []}, 400, "images"),
    ("too many", _image_request(*[_image(10, 10)] * 3), 400, "max_images"),
]


@pytest.mark.parametrize("case", BAD_VLM, ids=[c[0] for c in BAD_VLM])
def test_bad_images_get_a_json_error_and_the_vlm_keeps_serving(vlm, case):
    _, body, status, code = case
    reply = httpx.post(f"{vlm.url}/v1/generate", json=body, timeout=60)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code
    ok = httpx.post(f"{vlm.url}/v1/generate", json=_image_request(_image(40, 30)), timeout=60)
    assert ok.status_code == 200 and len(ok.json()["output_token_ids"]) == 3


def test_handle_callers_get_the_request_error(tiny):
    with pytest.raises(RequestError) as error:
        tiny.handle.generate.remote({**PROMPT, "max_new_tokens": 1000}).result()
    assert error.value.code == "max_new_tokens_limit"
    with pytest.raises(RequestError) as error:
        tiny.handle.generate.remote({"max_new_tokens": 3}).result()
    assert error.value.status == 422


def test_full_queue_gets_503_with_retry_after(tiny):
    async def flood():
        async with httpx.AsyncClient(timeout=300) as client:
            body = {**PROMPT, "max_new_tokens": 64}
            return await asyncio.gather(*(client.post(f"{tiny.url}/v1/generate", json=body) for _ in range(40)))

    replies = asyncio.run(flood())
    refused = [r for r in replies if r.status_code == 503]
    assert refused and all(r.headers["retry-after"] == "1" for r in refused)
    assert all(r.json()["error"]["code"] == "max_queued_requests" for r in refused)
    assert all(r.status_code in (200, 503) for r in replies)
    _assert_serves(tiny)


# ---------------------------------------------------------------- auth


def test_api_key_guards_every_route_but_healthz(secure):
    assert httpx.get(f"{secure.url}/healthz").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        reply = httpx.get(f"{secure.url}/v1/models", headers=headers)
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "unauthorized"
        assert httpx.post(f"{secure.url}/v1/generate", json=PROMPT, headers=headers).status_code == 401
        assert httpx.get(f"{secure.url}/v1/policy", headers=headers).status_code == 401
    assert httpx.get(f"{secure.url}/v1/policy", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    client = OpenAI(base_url=f"{secure.url}/v1", api_key=API_KEY)
    assert (
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        ).usage.completion_tokens
        >= 1
    )


def test_weights_cannot_be_loaded_over_http(secure):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for path in ("/load_weights", "/v1/load_weights", "/v1/weights"):
        assert httpx.post(f"{secure.url}{path}", json={}, headers=headers).status_code == 404
    for path in ("/docs", "/openapi.json"):  # nothing served outside the key's reach
        assert httpx.get(f"{secure.url}{path}").status_code == 401
    assert httpx.get(f"{secure.url}/redoc", headers=headers).status_code == 404


# ---------------------------------------------------------------- weight swap and restart


def _replicas(app: App) -> list[dict]:
    return [
        r for r in app.handle.broadcast("info").results(return_exceptions=True, timeout_s=30) if isinstance(r, dict)
    ]


def test_broadcast_swap_reaches_both_replicas_and_a_restarted_one(tiny, tmp_path):
    """A training run's sync: a weights file's path; the registry keeps the path for the restarted replica."""
    before = tiny.handle.generate.remote(PROMPT).result()
    policy = load_policy("tiny")
    shifted = {
        name: tensor + 0.05 * torch_randn_like(tensor, seed=i)
        for i, (name, tensor) in enumerate(policy.model.state_dict().items())
    }
    path = str(write_weights_file(shifted, tmp_path / "v00005.safetensors"))
    reports = tiny.handle.broadcast("load_weights", path, 5).results()
    assert len(reports) == 2 and all(r["version"] == 5 and r["swapped"] for r in reports)
    assert {info["version"] for info in _replicas(tiny)} == {5}
    after = tiny.handle.generate.remote(PROMPT).result()
    assert after["policy_version"] == 5 and after["logprobs"] != before["logprobs"]
    with pytest.raises(StaleVersionError):
        tiny.handle.broadcast("load_weights", ray.put(shifted), 4).results()

    infos = _kill_a_replica_and_wait_for_its_successor(tiny)
    assert {info["version"] for info in infos} == {5}
    for _ in range(4):
        again = httpx.post(f"{tiny.url}/v1/generate", json=PROMPT, timeout=60).json()
        assert again["policy_version"] == 5 and again["output_token_ids"] == after["output_token_ids"]


@pytest.mark.parametrize(
    "tiny", ["transformers"], indirect=True
)  # engine-independent; vLLM's snapshot: test_vllm_engine
def test_a_recreated_registry_is_refilled_for_later_replicas(tiny):
    version = max(info["version"] for info in _replicas(tiny)) + 1
    policy = load_policy("tiny")
    shifted = {
        name: tensor + 0.05 * torch_randn_like(tensor, seed=100 + i)
        for i, (name, tensor) in enumerate(policy.model.state_dict().items())
    }
    tiny.handle.broadcast("load_weights", ray.put(shifted), version).results()
    expected = tiny.handle.generate.remote(PROMPT).result()
    assert expected["policy_version"] == version

    ray.kill(_registry_actor(tiny))  # the controller recreates it empty
    deadline = time.monotonic() + 120
    published = 0
    while time.monotonic() < deadline and published != version:  # until a health check refills it
        time.sleep(1)
        try:
            published = ray.get(_registry_actor(tiny).version.remote(), timeout=10)
        except (ray.exceptions.RayError, LookupError, ValueError):
            continue  # being recreated
    assert published == version

    infos = _kill_a_replica_and_wait_for_its_successor(tiny)
    assert {info["version"] for info in infos} == {version}
    for _ in range(4):
        again = httpx.post(f"{tiny.url}/v1/generate", json=PROMPT, timeout=60).json()
        assert again["policy_version"] == version and again["output_token_ids"] == expected["output_token_ids"]


def _registry_actor(app: App):
    """The weight registry actor of `app`'s deployment (Serve names it SERVE_DEPLOYMENT_ACTOR::app::deployment::...)."""
    prefix, suffix = f"SERVE_DEPLOYMENT_ACTOR::{app.name}::{DEPLOYMENT_NAME}::", f"::{REGISTRY_ACTOR}"
    named = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix) and a["name"].endswith(suffix)
    ]
    if len(named) != 1:
        raise LookupError(f"want one registry actor of {app.name!r}, found {named}")
    return ray.get_actor(named[0]["name"], namespace=named[0]["namespace"])


def _kill_a_replica_and_wait_for_its_successor(app: App) -> list[dict]:
    """Kill one replica; return the replicas' infos once the controller has replaced it."""
    killed = _replicas(app)[0]["replica"]
    ray.kill(ray.get_actor(f"SERVE_REPLICA::{app.name}#{DEPLOYMENT_NAME}#{killed}", namespace="serve"), no_restart=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        infos = _replicas(app)
        if len(infos) == 2 and killed not in {info["replica"] for info in infos}:
            return infos
        time.sleep(1)
    pytest.fail(f"replica {killed} of {app.name} was not replaced within 120 s")


def torch_randn_like(tensor, *, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
