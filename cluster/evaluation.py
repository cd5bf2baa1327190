"""The evaluation harness: every variant of a task on held-out seeds and held-out tasks.

For each variant (id, rule_ood, and visual_ood for VL tasks) it plays `episodes_per_variant`
episodes on the first seeds of EVAL_SEEDS (the same seeds at every evaluation, so numbers are
comparable across iterations) through the rollout fleet, greedy or sampled, on envs that deal
`env.split_for("eval")` tasks: GP card multisets training never deals and V-IRL routes it never
walks (envs.splits), or every task under env.split=none (the paper's no-split protocol). It reports:

- `success`: solved within the attempt budget;
- `first_attempt_success`: solved with no failed attempt (no turn with a non-positive reward);
- every rate the env counts in its final `info` (`eval_hits` / `eval_trials`, metric -> count),
  pooled over episodes as sum(hits) / sum(trials): `step_accuracy` (V-IRL: correct actions /
  actions), `legal_formula` (GeneralPoints: the first answer's formula uses each of the hand's
  numbers exactly once, its value aside), `card_accuracy` (GeneralPoints: the first answer's `cards`
  are the dealt hand, as the verifier reads card names).

It writes `OUT_DIR/episodes_<variant>.jsonl` (every episode, every turn's text) and
`OUT_DIR/summary.csv`, and `render_table` draws the rich table. `sftrl eval --checkpoint DIR
--task gp-l` runs it on a saved checkpoint (cluster/cli/train.py).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.config import EnvConfig, EvalConfig, RolloutConfig, SamplingConfig
from cluster.ports import FleetPort
from cluster.rollout import Episode, EpisodeRequest
from envs.seeds import EVAL_SEEDS
from serving.config import ServingConfig

if TYPE_CHECKING:
    from rich.table import Table

    from envs.splits import Split


@dataclass
class VariantResult:
    """Scores of one variant; None where a metric does not apply to the task.

    `step_accuracy` and `card_accuracy` are rates the envs count in `info` (`eval_hits` /
    `eval_trials`), each with its denominator (`<rate>_trials`; `episodes` is the denominator of the
    per-episode rates); an env that counts a new rate needs both fields here, defaulting to None.
    """

    variant: str
    episodes: int
    dropped: int
    success: float
    first_attempt_success: float
    reward_mean: float
    step_accuracy: float | None = None
    card_accuracy: float | None = None
    legal_formula: float | None = None
    step_accuracy_trials: int | None = None
    card_accuracy_trials: int | None = None
    legal_formula_trials: int | None = None


def eval_sampling(config: EvalConfig) -> SamplingConfig:
    """Greedy (temperature 0) or the configured sampling; max_new_tokens from eval.sampling."""
    if config.greedy:
        return config.sampling.model_copy(update={"temperature": 0.0, "top_p": 1.0})
    return config.sampling


def eval_requests(variant: str, n_episodes: int, *, split: Split = "eval") -> list[EpisodeRequest]:
    """The first `n_episodes` held-out seeds, one group each, on envs dealing `split`'s tasks (held-out ones)."""
    return [EpisodeRequest(seed=EVAL_SEEDS[i], group=i, variant=variant, split=split) for i in range(n_episodes)]


def evaluate(fleet: FleetPort, env_config: EnvConfig, config: EvalConfig, *, out_dir: Path) -> list[VariantResult]:
    """Evaluate every variant of the task on env.split_for("eval") tasks; writes JSONL and CSV under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sampling = eval_sampling(config)
    results = []
    for variant in env_config.spec.variants:
        requests = eval_requests(variant, config.episodes_per_variant, split=env_config.split_for("eval"))
        collected = fleet.collect(requests, sampling)
        write_episodes(out_dir / f"episodes_{variant}.jsonl", collected.episodes)
        results.append(score_variant(variant, collected.episodes, dropped=collected.dropped))
    write_summary_csv(out_dir / "summary.csv", results)
    return results


def score_variant(variant: str, episodes: list[Episode], *, dropped: int = 0) -> VariantResult:
    """Aggregate one variant's episodes into its scores (plus the rates the env counts in `info`)."""

    def mean(values: list[float]) -> float:
        return float(sum(values) / len(values)) if values else float("nan")

    rates = _pooled_rates(episodes)
    unknown = sorted(rates.keys() - {f.name for f in fields(VariantResult) if f.default is None})
    if unknown:
        raise ValueError(f"the env counts the rates {unknown}, which VariantResult lacks; add a field for each")
    return VariantResult(
        variant=variant,
        episodes=len(episodes),
        dropped=dropped,
        success=mean([ep.success for ep in episodes]),
        first_attempt_success=mean([ep.success and all(t.reward > 0 for t in ep.turns) for ep in episodes]),
        reward_mean=mean([ep.total_reward for ep in episodes]),
        **rates,
    )


def _pooled_rates(episodes: list[Episode]) -> dict[str, float]:
    """Metric -> sum(hits) / sum(trials) over episodes, and `<metric>_trials` -> sum(trials).

    From each final info's `eval_hits` / `eval_trials`. A metric no episode counts is absent; one
    counted with no trials at all is NaN.
    """
    hits: Counter[str] = Counter()
    trials: Counter[str] = Counter()
    for episode in episodes:
        hits.update(episode.final_info.get("eval_hits", {}))
        trials.update(episode.final_info.get("eval_trials", {}))
    rates = {name: hits[name] / trials[name] if trials[name] else float("nan") for name in trials}
    return rates | {f"{name}_trials": trials[name] for name in trials}


def variant_metrics(results: list[VariantResult]) -> dict[str, float]:
    """`eval/<variant>/<metric>` keys for metrics.jsonl, with the denominators (`episodes`, `<rate>_trials`)."""
    metrics = {}
    for r in results:
        for key in (
            "episodes",
            "success",
            "first_attempt_success",
            "reward_mean",
            "step_accuracy",
            "card_accuracy",
            "legal_formula",
            "step_accuracy_trials",
            "card_accuracy_trials",
            "legal_formula_trials",
        ):
            value = getattr(r, key)
            if value is not None:
                metrics[f"eval/{r.variant}/{key}"] = value
    return metrics


def write_episodes(path: Path, episodes: list[Episode]) -> None:
    """One JSON line per episode: seed, success, reward, every turn's text and reward."""
    with path.open("w") as f:
        for ep in episodes:
            f.write(
                json.dumps(
                    {
                        "seed": ep.seed,
                        "variant": ep.variant,
                        "success": ep.success,
                        "total_reward": ep.total_reward,
                        "final_info": ep.final_info,
                        "turns": [
                            {
                                "text": t.text,
                                "reward": t.reward,
                                "policy_version": t.policy_version,
                                "output_tokens": len(t.output_ids),
                                "finish_reason": t.finish_reason,
                            }
                            for t in ep.turns
                        ],
                    }
                )
                + "\n"
            )


def write_summary_csv(path: Path, results: list[VariantResult]) -> None:
    """One row per variant."""
    rows = [asdict(r) for r in results]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def render_table(results: list[VariantResult], *, title: str) -> Table:
    """A rich table: one row per variant, percentages."""
    from rich.table import Table

    table = Table(title=title)
    columns = ["variant", "episodes", "success", "first-attempt success", "reward mean"]
    has_steps = any(r.step_accuracy is not None for r in results)
    has_cards = any(r.card_accuracy is not None for r in results)
    has_legal = any(r.legal_formula is not None for r in results)
    columns += ["step accuracy"] * has_steps + ["card accuracy"] * has_cards + ["legal formula"] * has_legal
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for r in results:
        row = [
            r.variant,
            f"{r.episodes}" + (f" ({r.dropped} dropped)" if r.dropped else ""),
            _pct(r.success),
            _pct(r.first_attempt_success),
            f"{r.reward_mean:.2f}",
        ]
        row += [_pct(r.step_accuracy)] * has_steps + [_pct(r.card_accuracy)] * has_cards
        row += [_pct(r.legal_formula)] * has_legal
        table.add_row(*row)
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def evaluate_checkpoint(
    checkpoint: str,
    env_config: EnvConfig,
    config: EvalConfig,
    *,
    rollout: RolloutConfig,
    serving: ServingConfig,
    out_dir: Path,
) -> list[VariantResult]:
    """Serve `checkpoint` (a HF directory or built-in model name) and evaluate it on every variant.

    Connects to RAY_ADDRESS's cluster or starts a local one; stops what it started, also on an
    error, Ctrl-C or SIGTERM (`session.ClusterSession`).
    """
    from cluster.fleet import RolloutFleet
    from cluster.policy_service import PolicyService
    from cluster.session import ClusterSession

    with ClusterSession() as session:
        served = serving.model_copy(update={"model": checkpoint, "checkpoint": None})
        policy = session.started("policy", PolicyService.start(served, http=False))
        fleet = session.started("fleet", RolloutFleet.launch(env_config, policy.handle, rollout))
        return evaluate(fleet, env_config, config, out_dir=out_dir)
