"""Evaluation scoring, files and table (no Ray: a fleet running one worker in-process)."""

import csv
import json

from cluster_fakes import FakeEnv, FakePolicy, InProcessFleet
from rich.console import Console

from cluster.config import EnvConfig, EvalConfig, SamplingConfig
from cluster.evaluation import (
    VariantResult,
    cards_recognised,
    eval_requests,
    eval_sampling,
    evaluate,
    render_table,
    score_variant,
    variant_metrics,
)
from cluster.rollout import Episode, RolloutWorker, Turn
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
    result = score_variant("id", episodes, task="gp-l")
    assert (result.success, result.first_attempt_success) == (0.5, 0.25)
    assert result.step_accuracy is None and result.card_accuracy is None


def test_virl_step_accuracy_pools_actions():
    episodes = [
        _ep([1.0], success=True, info={"actions": 4, "correct_actions": 4}),
        _ep([-1.0], success=False, info={"actions": 6, "correct_actions": 2}),
    ]
    assert score_variant("id", episodes, task="virl-l").step_accuracy == 0.6


def test_gp_vl_card_recognition_compares_multisets():
    hand = {"cards": ["K", "10", "A", "10"]}
    right = _ep([5.0], success=True, text='{"cards": ["10", "k", "A", 10], "formula": "1"}', info=hand)
    wrong = _ep([-1.5], success=False, text='{"cards": ["Q", "10", "A", "10"]}', info=hand)
    garbage = _ep([-3.0], success=False, text="no json here", info=hand)
    assert [cards_recognised(e) for e in (right, wrong, garbage)] == [True, False, False]
    assert score_variant("id", [right, wrong], task="gp-vl").card_accuracy == 0.5


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
