"""The picture and navigation tasks end to end on real Ray, Serve and DeepSpeed.

GP-VL with the tiny LLaVA model (card pictures go through the server's and the learner's image processor) and
V-IRL text with the tiny model served by vLLM (multi-turn conversations through its prefix cache, weight pushes
into a live engine, by broadcast; the GP-VL run syncs by file, auto's choice on one node). One SFT step, one RL
iteration, evaluation of every variant.
"""

import pytest
from e2e_helpers import TINY
from ray import serve

from cluster.config import load_config
from cluster.metrics import read_metrics
from cluster.train import build_session

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHORT = [
    "run.sft_steps=1",
    "run.iterations=1",
    "eval.episodes_per_variant=1",
    "rollout.sampling.max_new_tokens=8",
    "eval.sampling.max_new_tokens=8",
]


@pytest.mark.parametrize(
    "task, model, engine, transport, variants, metric",
    [
        ("gp-vl", "tiny-vlm", "transformers", "auto", ["id", "rule_ood", "visual_ood"], "card_accuracy"),
        ("virl-l", "tiny", "vllm", "broadcast", ["id", "rule_ood"], "step_accuracy"),
    ],
)
def test_task_trains_and_evaluates_every_variant(
    ray_cluster, tmp_path, task, model, engine, transport, variants, metric
):
    overrides = [f"env.task={task}", f"learner.model={model}", f"serving.model={model}", f"serving.engine={engine}"]
    overrides.append(f"weight_sync.transport={transport}")
    config = load_config(TINY, [*SHORT, *overrides])
    session = build_session(config, tmp_path)
    try:
        state = session.trainer.run()
        results = session.trainer.evals[-1].results
        [info] = serve.get_app_handle(config.serving.app_name).broadcast("info").results()
    finally:
        session.close()
    assert info["engine"] == engine and info["version"] == state.policy_version
    assert (state.sft_step, state.iteration, state.policy_version) == (1, 1, 2)
    sft, rl = [next(r for r in read_metrics(tmp_path) if r["phase"] == phase) for phase in ("sft", "rl")]
    assert sft["loss/sft"] > 0 and "loss/policy" in rl and rl["rollout/episodes"] == 4
    assert rl["sync/fallbacks_total"] == 0  # every sync took the transport planned for it
    assert [r.variant for r in results] == variants
    assert all(r.episodes == 1 and getattr(r, metric) is not None for r in results)
    assert (tmp_path / "policy" / "config.json").is_file()
