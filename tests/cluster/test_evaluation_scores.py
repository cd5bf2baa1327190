"""Evaluation scoring, files and table (no Ray: a fleet running one worker in-process)."""

import asyncio
import csv
import json
import math
import re

import pytest
from cluster_fakes import FakeEnv, FakePolicy, InProcessFleet
from rich.console import Console

from cluster.config import EnvConfig, EvalConfig, SamplingConfig
from cluster.evaluation import (
    VariantResult,
    eval_requests,
    eval_sampling,
    evaluate,
    render_table,
    score_variant,
    variant_metrics,
)
from cluster.rollout import Episode, EpisodeRequest, RolloutWorker, Turn
from envs.seeds import EVAL_SEEDS, TRAIN_SEEDS


def _ep(rewards, *, success, text="x", info=None):
    turns = [Turn([1], [2], [-0.1], r, 0, text, "stop") for r in rewards]
    return Episode(seed=0, group=0, variant="id", success=success, turns=turns, final_info=info or {})


def test_eval_uses_held_out_seeds_only():
    seeds = [r.seed for r in eval_requests("rule_ood", 5)]
    assert seeds == list(EVAL_SEEDS[:5])
    assert not set(seeds) & set(range(TRAIN_SEEDS.start, TRAIN_SEEDS.stop, 100_000))
    assert all(s in EVAL_SEEDS for s in seeds) and all(s not in TRAIN_SEEDS for s in seeds)


def test_greedy_sets_temperature_zero_and_keeps_the_token_budget():
    sampling = eval_sampling(EvalConfig(greedy=True, sampling=SamplingConfig(temperature=0.7, max_new_tokens=9)))
    assert (sampling.temperature, sampling.max_new_tokens) == (0.0, 9)
    assert eval_sampling(EvalConfig(greedy=False, sampling=SamplingConfig(temperature=0.7))).temperature == 0.7


def test_success_and_first_attempt_success():
    episodes = [
        _ep([5.0], success=True),
        _ep([-1.0, 5.0], success=True),
        _ep([-1.0, -1.0], success=False),
        _ep([-3.0], success=False),
    ]
    result = score_variant("id", episodes)
    assert (result.success, result.first_attempt_success) == (0.5, 0.25)
    assert result.step_accuracy is None and result.card_accuracy is None


def _counts(**rates):
    """An env's final-info counts: metric=(hits, trials)."""
    return {
        "eval_hits": {name: hits for name, (hits, _) in rates.items()},
        "eval_trials": {name: trials for name, (_, trials) in rates.items()},
    }


def test_env_counted_rates_pool_hits_over_trials():
    episodes = [
        _ep([1.0], success=True, info=_counts(step_accuracy=(4, 4))),
        _ep([-1.0], success=False, info=_counts(step_accuracy=(2, 6))),
    ]
    result = score_variant("id", episodes)
    assert result.step_accuracy == 0.6 and result.card_accuracy is None
    cards = [_ep([5.0], success=True, info=_counts(card_accuracy=(h, 1))) for h in (1, 0, 1, 1)]
    assert score_variant("id", cards).card_accuracy == 0.75
    assert math.isnan(
        score_variant("id", [_ep([-1.0], success=False, info=_counts(card_accuracy=(0, 0)))]).card_accuracy
    )


def test_a_rate_without_a_result_field_is_an_error():
    with pytest.raises(ValueError, match="made_up_rate"):
        score_variant("id", [_ep([1.0], success=True, info=_counts(made_up_rate=(1, 1)))])


class _FullNamePolicy(FakePolicy):
    """Answers GP-L with the listed cards spelt out ("King"), the way the verifier still reads them."""

    async def reply(self, request: dict) -> dict:
        reply = await super().reply(request)
        listed = re.search(r"four playing cards: (.*?)\.", request["messages"][1]["content"]).group(1).split(", ")
        names = {"A": "Ace", "J": "Jack", "Q": "Queen", "K": "King"}
        return {**reply, "text": json.dumps({"cards": [names.get(c, c) for c in listed], "formula": "1"})}


def test_card_accuracy_counts_king_as_recognised():
    env_config = EnvConfig(task="gp-l", kwargs={"max_attempts": 1})
    worker = RolloutWorker(env_config, _FullNamePolicy(), envs_per_actor=1)
    requests = [EpisodeRequest(seed=seed, group=seed, variant="rule_ood") for seed in (1, 4)]
    episodes = asyncio.run(worker.run_episodes(requests, SamplingConfig())).episodes
    assert all("K" in ep.final_info["cards"] and "King" in ep.turns[0].text for ep in episodes)
    assert score_variant("rule_ood", episodes).card_accuracy == 1.0


def test_evaluate_writes_jsonl_csv_and_metrics(tmp_path):
    worker = RolloutWorker(EnvConfig(task="gp-vl"), FakePolicy(), envs_per_actor=2, make_env=FakeEnv)
    results = evaluate(
        InProcessFleet(worker), EnvConfig(task="gp-vl"), EvalConfig(episodes_per_variant=3), out_dir=tmp_path
    )
    assert [r.variant for r in results] == ["id", "rule_ood", "visual_ood"]
    lines = (tmp_path / "episodes_visual_ood.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["turns"][0]["text"] == "0"
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["variant"] for r in rows] == ["id", "rule_ood", "visual_ood"]
    metrics = variant_metrics(results)
    assert metrics["eval/rule_ood/success"] == 1.0
    assert metrics["eval/id/first_attempt_success"] == results[0].first_attempt_success
    assert "eval/id/card_accuracy" in metrics and "eval/id/step_accuracy" not in metrics


def test_table_shows_percentages_and_dropped():
    console = Console(record=True, width=140)
    console.print(render_table([VariantResult("id", 4, 1, 0.5, 0.25, 1.0, card_accuracy=0.75)], title="GP-VL"))
    text = console.export_text()
    assert "50.0%" in text and "25.0%" in text and "75.0%" in text and "(1 dropped)" in text
