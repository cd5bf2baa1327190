"""Unit tests (no Ray, no model) of the serving boundary: config, schemas, limits, images, batcher."""

import asyncio
import base64
import io
import pickle
import selectors

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
        {"prompt_token_ids": [1], "temperature": 1e-40},  # above 0, below MIN_TEMPERATURE: NaN log-probs
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


class _VirtualClockSelector(selectors.DefaultSelector):
    """A selector that holds its loop's clock and moves it instead of sleeping.

    Where the loop would sleep until its next timer and no worker thread can wake it first, the clock
    jumps to that timer instead of waiting.
    """

    def __init__(self):
        super().__init__()
        self.now = 0.0
        self.threads_running = 0

    def select(self, timeout=None):
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None or self.threads_running:
            return super().select(timeout)  # a worker thread finishing wakes the loop: wait for it for real
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: sleeps and timeouts take no real time and fire in exact order.

    A batch running in a worker thread takes no virtual time. The batcher's waits are then checked by
    arithmetic instead of by racing real sleeps against real timeouts.
    """

    def __init__(self):
        self._clock = _VirtualClockSelector()
        super().__init__(self._clock)

    def time(self) -> float:
        return self._clock.now

    def run_in_executor(self, executor, func, *args):
        future = super().run_in_executor(executor, func, *args)
        self._clock.threads_running += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future) -> None:
        self._clock.threads_running -= 1


def _in_virtual_time(main):
    """Run the coroutine function `main()` on a fresh VirtualTimeLoop and return its result.

    A future nobody resolves fails the test at once: the clock jumps to the 60 s deadline.
    """
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), timeout=60))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


class _Recorder:
    """A run_batch that returns its items and records each batch as (size, virtual start time)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.batches: list[tuple[int, float]] = []

    def __call__(self, items):
        self.batches.append((len(items), self.loop.time()))
        return items


def test_batcher_groups_concurrent_items_and_keeps_their_order():
    sizes = []

    def run(items):
        sizes.append(len(items))
        return [item * 10 for item in items]

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=4, batch_wait_timeout_s=0.05, batch_max_wait_s=0.5)
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert _in_virtual_time(main) == [i * 10 for i in range(10)]
    assert sizes == [4, 4, 2]  # they arrived together: full batches at once, no waiting


async def _trickle(*, n: int, gap_s: float, max_wait_s: float):
    """Submit items 0..n-1, `gap_s` apart, to a batcher with a 0.3 s pause timeout and `max_wait_s` cap.

    Returns (results in order, the batches as (size, virtual start time)).
    """
    run = _Recorder(asyncio.get_running_loop())
    batcher = DynamicBatcher(run, max_batch_size=32, batch_wait_timeout_s=0.3, batch_max_wait_s=max_wait_s)
    waiting = []
    for i in range(n):
        if i:
            await asyncio.sleep(gap_s)
        waiting.append(asyncio.ensure_future(batcher.submit(i)))
    return await asyncio.gather(*waiting), run.batches


def test_batcher_keeps_waiting_while_arrivals_trickle_in():
    # arrivals at t = 0, 0.2, ..., 0.8: each gap is shorter than the timeout
    results, batches = _in_virtual_time(lambda: _trickle(n=5, gap_s=0.2, max_wait_s=10.0))
    assert results == list(range(5))
    assert batches == [(5, pytest.approx(0.8 + 0.3))]  # one batch, a timeout after the last arrival


def test_batcher_stops_waiting_at_the_cap():
    # arrivals at t = 0, 0.25, ..., 1.25: the wait would never end without the cap
    results, batches = _in_virtual_time(lambda: _trickle(n=6, gap_s=0.25, max_wait_s=0.9))
    assert results == list(range(6))
    # The arrivals up to 0.75 leave at the cap; the next two form a batch a timeout after the last one.
    assert batches == [(4, pytest.approx(0.9)), (2, pytest.approx(1.25 + 0.3))]


def test_batcher_sends_a_failure_to_its_batch_and_keeps_serving():
    def run(items):
        if "bad" in items:
            raise RuntimeError("boom")
        return items

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=8, batch_wait_timeout_s=0.05, batch_max_wait_s=0.5)
        failed = await asyncio.gather(batcher.submit("bad"), batcher.submit("x"), return_exceptions=True)
        return failed, await batcher.submit("ok")

    failed, ok = _in_virtual_time(main)
    assert all(isinstance(f, RuntimeError) for f in failed) and ok == "ok"


def test_batcher_fails_every_item_when_run_batch_returns_the_wrong_number_of_results():
    async def main():
        batcher = DynamicBatcher(
            lambda items: items[:1], max_batch_size=8, batch_wait_timeout_s=0.05, batch_max_wait_s=0.5
        )
        return await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)

    failed = _in_virtual_time(main)
    assert [type(f) for f in failed] == [ValueError, ValueError]
    assert "returned 1 results for 2 items" in str(failed[0])


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

    assert _in_virtual_time(main) == "kept"
    assert seen == ["kept"]


def test_app_builder_takes_serve_run_string_args():
    from ray.serve import Application

    from serving.app import app, app_builder

    assert isinstance(app, Application)
    assert isinstance(app_builder({"model": "tiny", "num_replicas": "2", "max_batch_size": "8"}), Application)
    with pytest.raises(ValidationError, match="replicas"):
        app_builder({"model": "tiny", "replicas": "2"})
