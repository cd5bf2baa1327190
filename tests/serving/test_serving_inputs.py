"""Unit tests (no Ray, no model) of the serving boundary: config, schemas, limits, images, batcher."""

import asyncio
import base64
import io
import pickle

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from serving.batching import DynamicBatcher
from serving.config import ServingConfig
from serving.images import decode_images, to_data_url
from serving.limits import QueueGate, RequestError, check_context, check_max_new_tokens
from serving.openai_compat import chat_to_generate
from serving.schemas import ChatCompletionRequest, GenerateRequest


def _png(width=8, height=6) -> Image.Image:
    return Image.fromarray(np.random.RandomState(0).randint(0, 255, (height, width, 3), dtype=np.uint8))


# ---------------------------------------------------------------- config


def test_config_reads_api_key_from_env_and_hides_it(monkeypatch):
    monkeypatch.setenv("SFTRL_API_KEY", "s3cret")
    config = ServingConfig()
    assert config.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    monkeypatch.delenv("SFTRL_API_KEY")
    assert ServingConfig().api_key is None


def test_config_binds_localhost_by_default():
    assert ServingConfig().host == "127.0.0.1"


def test_config_refuses_default_above_limit_and_unknown_fields():
    with pytest.raises(ValidationError, match="default_max_new_tokens"):
        ServingConfig(default_max_new_tokens=64, max_new_tokens_limit=32)
    with pytest.raises(ValidationError, match="max_batch"):
        ServingConfig(max_batch=4)


# ---------------------------------------------------------------- schemas


def test_generate_request_needs_exactly_one_prompt():
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest()
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest(messages=[{"role": "user", "content": "hi"}], prompt_token_ids=[1])
    assert GenerateRequest(prompt_token_ids=[1, 2]).temperature == 1.0


@pytest.mark.parametrize(
    "body",
    [
        {"prompt_token_ids": [1], "temprature": 0.5},  # typo: unknown field
        {"prompt_token_ids": "1 2 3"},  # wrong type
        {"prompt_token_ids": [1], "top_p": 0},  # out of range
        {"messages": [{"role": "robot", "content": "hi"}]},  # bad role
    ],
)
def test_generate_request_rejects_bad_bodies(body):
    with pytest.raises(ValidationError):
        GenerateRequest.model_validate(body)


def test_chat_request_maps_images_stop_and_max_tokens():
    chat = ChatCompletionRequest.model_validate(
        {
            "model": "tiny",
            "max_tokens": 7,
            "stop": "END",
            "seed": 3,
            "unknown_openai_field": 1,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "text", "text": "what is it?"},
                    ],
                }
            ],
        }
    )
    request = chat_to_generate(chat)
    assert request.images == ["data:image/png;base64,AAAA"]
    assert request.messages[0].content[0].type == "image"
    assert (request.max_new_tokens, request.stop, request.seed) == (7, ["END"], 3)


def test_chat_request_refuses_streaming():
    with pytest.raises(ValidationError):
        ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)


# ---------------------------------------------------------------- limits


def test_limits_name_the_limit():
    with pytest.raises(RequestError) as error:
        check_max_new_tokens(2000, 1024)
    assert (error.value.status, error.value.code) == (400, "max_new_tokens_limit")
    assert "1024" in error.value.message
    with pytest.raises(RequestError, match="context"):
        check_context(8000, 300, 8192)
    check_context(10, 10, 20)


def test_request_error_pickles_and_has_an_openai_body():
    error = pickle.loads(pickle.dumps(RequestError(503, "full", "max_queued_requests", retry_after_s=2)))
    assert error.retry_after_s == 2
    assert error.body()["error"]["code"] == "max_queued_requests"


def test_queue_gate_refuses_past_the_limit_with_retry_after():
    gate = QueueGate(2, retry_after_s=3)
    gate.enter()
    gate.enter()
    with pytest.raises(RequestError) as error:
        gate.enter()
    assert (error.value.status, error.value.retry_after_s) == (503, 3)
    gate.leave()
    gate.enter()


# ---------------------------------------------------------------- images


def test_decode_images_accepts_png_and_jpeg_as_data_url_or_bare_base64():
    png_url = to_data_url(_png())
    jpeg_url = to_data_url(_png(), fmt="JPEG")
    bare = png_url.split(",", 1)[1]
    images = decode_images([png_url, jpeg_url, bare])
    assert [im.size for im in images] == [(8, 6)] * 3
    assert all(im.mode == "RGB" for im in images)


@pytest.mark.parametrize(
    "text,status,code",
    [
        ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(), 400, "image_decode"),
        ("data:image/png;base64,@@@@", 400, "image_decode"),
        ("https://example.com/cat.png", 400, "image_url"),
        ("data:image/png,rawdata", 400, "image_format"),
    ],
)
def test_decode_images_refuses_corrupt_or_remote(text, status, code):
    with pytest.raises(RequestError) as error:
        decode_images([text])
    assert (error.value.status, error.value.code) == (status, code)


def test_decode_images_bounds_bytes_pixels_and_count():
    url = to_data_url(_png(40, 30))
    with pytest.raises(RequestError) as error:
        decode_images([url], max_pixels=40 * 30 - 1)
    assert (error.value.status, error.value.code) == (413, "max_image_pixels")
    with pytest.raises(RequestError) as error:
        decode_images([url], max_bytes=10)
    assert (error.value.status, error.value.code) == (413, "max_image_bytes")
    with pytest.raises(RequestError, match="max_images"):
        decode_images([url] * 3, max_images=2)


def test_decode_images_refuses_other_formats():
    buffer = io.BytesIO()
    _png().save(buffer, format="GIF")
    with pytest.raises(RequestError, match="PNG or JPEG"):
        decode_images([base64.b64encode(buffer.getvalue()).decode()])


# ---------------------------------------------------------------- batcher


def test_batcher_groups_concurrent_items_and_keeps_their_order():
    sizes = []

    def run(items):
        sizes.append(len(items))
        return [item * 10 for item in items]

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=4, batch_wait_timeout_s=0.05, batch_max_wait_s=0.5)
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert asyncio.run(main()) == [i * 10 for i in range(10)]
    assert sorted(sizes, reverse=True)[0] == 4 and sum(sizes) == 10 and len(sizes) >= 3


def test_batcher_keeps_waiting_while_arrivals_trickle_in():
    sizes = []

    def run(items):
        sizes.append(len(items))
        return items

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=32, batch_wait_timeout_s=0.3, batch_max_wait_s=10.0)
        waiting = []
        for i in range(5):
            waiting.append(asyncio.ensure_future(batcher.submit(i)))
            await asyncio.sleep(0.05)  # each gap is shorter than the timeout, the total is longer
        return await asyncio.gather(*waiting)

    assert asyncio.run(main()) == list(range(5))
    assert sizes == [5]


def test_batcher_sends_a_failure_to_its_batch_and_keeps_serving():
    def run(items):
        if "bad" in items:
            raise RuntimeError("boom")
        return items

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=8, batch_wait_timeout_s=0.05, batch_max_wait_s=0.5)
        failed = await asyncio.gather(batcher.submit("bad"), batcher.submit("x"), return_exceptions=True)
        return failed, await batcher.submit("ok")

    failed, ok = asyncio.run(main())
    assert all(isinstance(f, RuntimeError) for f in failed) and ok == "ok"


def test_batcher_skips_cancelled_submissions():
    seen = []

    def run(items):
        seen.extend(items)
        return items

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=8, batch_wait_timeout_s=0.2, batch_max_wait_s=0.5)
        doomed = asyncio.ensure_future(batcher.submit("cancelled"))
        await asyncio.sleep(0)  # let it enqueue
        doomed.cancel()
        return await batcher.submit("kept")

    assert asyncio.run(main()) == "kept"
    assert seen == ["kept"]


def test_app_builder_takes_serve_run_string_args():
    from ray.serve import Application

    from serving.app import app, app_builder

    assert isinstance(app, Application)
    assert isinstance(app_builder({"model": "tiny", "num_replicas": "2", "max_batch_size": "8"}), Application)
    with pytest.raises(ValidationError, match="replicas"):
        app_builder({"model": "tiny", "replicas": "2"})
