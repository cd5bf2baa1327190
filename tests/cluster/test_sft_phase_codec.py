"""The driver's SFT samples come from the model's prompt codec: the same samples, no model built.

`oracle_samples` used to load the whole policy for its tokenizer (42 GB in fp32 for an 11B model
on the driver). Each case builds the samples the old way (`load_policy` in place of
`load_prompt_codec`), then again the new way with an empty model cache while building any
transformers model raises, and compares them field by field.
"""

import numpy as np
import pytest
from transformers import PreTrainedModel

from cluster import sft_phase
from cluster.config import EnvConfig
from learner.models import load_policy

N_SAMPLES = 4


def _refuse_model(self, *args, **kwargs):
    raise AssertionError(f"the driver built a model: {type(self).__name__}")


@pytest.mark.parametrize(
    "model, task",
    [("tiny", "gp-l"), pytest.param("smollm2-135m", "gp-l", marks=pytest.mark.slow), ("tiny-vlm", "gp-vl")],
)
def test_oracle_samples_are_the_policys_without_building_a_model(model, task, monkeypatch, tmp_path):
    env = EnvConfig(task=task)
    with monkeypatch.context() as before:
        before.setattr(sft_phase, "load_prompt_codec", load_policy)  # the driver as it was
        expected = sft_phase.oracle_samples(env, model, n_samples=N_SAMPLES, seed=3)

    monkeypatch.setenv("SFTRL_CACHE", str(tmp_path))  # nothing converted yet: a fresh driver pod
    monkeypatch.setattr(PreTrainedModel, "__init__", _refuse_model)
    samples = sft_phase.oracle_samples(env, model, n_samples=N_SAMPLES, seed=3)

    assert len(samples) == len(expected) == N_SAMPLES
    for got, want in zip(samples, expected, strict=True):
        assert (got.prompt_ids, got.output_ids) == (want.prompt_ids, want.output_ids)
        assert (got.images is None) == (want.images is None) == (task == "gp-l")
        for got_image, want_image in zip(got.images or [], want.images or [], strict=True):
            assert np.array_equal(got_image, want_image)
    assert not (tmp_path / "smollm2-135m").exists()  # only the tokenizer was converted
