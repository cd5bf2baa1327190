"""Held-out splits (envs.splits): GP rank multisets and V-IRL routes, train vs eval, and split="all"."""

import hashlib
import itertools
import json

import gymnasium as gym
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.general_points.cards import FACE_ORDINAL, FACE_RANKS, FACE_TEN, RANKS, hand_split_key, solution_table
from envs.seeds import EVAL_SEEDS, TRAIN_SEEDS
from envs.splits import EVAL_PERCENT, in_split, split_of
from envs.virl.city import generate_city
from envs.virl.env import OOD_CITY_SEED_BASE
from envs.virl.route import route_legs, route_split_key

MULTISETS = list(itertools.combinations_with_replacement(RANKS, 4))  # all 1,820 rank multisets
GP_COMBOS = [("id", "text"), ("rule_ood", "text"), ("visual_ood", "image")]


def _gp(variant="id", modality="text", **kwargs):
    return gym.make("sftrl/GeneralPoints-v0", variant=variant, modality=modality, image_size=(64, 64), **kwargs)


def _virl(variant="id", modality="text", **kwargs):
    return gym.make("sftrl/VIRL-v0", variant=variant, modality=modality, view_px=64, **kwargs)


def _dealable(variant: str, ranks: tuple[str, ...]) -> bool:
    """Whether the variant deals the hand at all (solvable under its rule; rule_ood: a face card)."""
    if variant == "rule_ood":
        return bool(FACE_RANKS & set(ranks)) and solution_table(FACE_ORDINAL, 24).is_solvable(ranks)
    return solution_table(FACE_TEN, 24).is_solvable(ranks)


def test_the_rule_is_a_fixed_hash_of_the_key_not_pythons_salted_hash():
    pinned = {
        "general_points:3,3,8,8": "train",
        "general_points:1,1,2,5": "eval",
        "virl:city0:0->1": "train",
        "virl:city0:0->4": "eval",
    }
    assert {key: split_of(key) for key in pinned} == pinned
    for key in pinned:
        code = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
        assert split_of(key) == ("eval" if code < EVAL_PERCENT else "train")
    assert all(in_split(key, "all") for key in pinned)
    assert [in_split(key, "eval") for key in pinned] == [False, True, False, True]


def test_gp_split_key_is_the_in_distribution_numbers_so_face_swaps_share_a_split():
    assert hand_split_key(("K", "3", "A", "10")) == "general_points:1,3,10,10" == hand_split_key(["J", "A", "Q", "3"])
    assert split_of(hand_split_key(("8", "3", "8", "3"))) == split_of(hand_split_key(("3", "3", "8", "8")))


@pytest.mark.parametrize("variant, modality", GP_COMBOS)
def test_every_gp_multiset_is_dealt_by_exactly_the_split_it_belongs_to(variant, modality):
    envs_by_split = {split: _gp(variant, modality, split=split).unwrapped for split in ("train", "eval", "all")}
    pools = {split: set() for split in envs_by_split}
    for ranks in MULTISETS:
        for split, env in envs_by_split.items():
            try:
                env.reset(options={"cards": list(ranks)})
            except ValueError as error:
                home = split_of(hand_split_key(ranks))
                if _dealable(variant, ranks):  # refused for its split only, and the message names both
                    assert split == ("eval" if home == "train" else "train"), (ranks, split, error)
                    assert f"the {home!r} split" in str(error) and f"split={split!r}" in str(error)
                continue
            pools[split].add(ranks)
    assert pools["train"].isdisjoint(pools["eval"]) and pools["train"] | pools["eval"] == pools["all"]
    assert pools["all"] == {ranks for ranks in MULTISETS if _dealable(variant, ranks)}
    share = len(pools["eval"]) / len(pools["all"])
    assert 0.15 < share < 0.25, share  # about EVAL_PERCENT of the variant's multisets
    # The split is by in-distribution numbers: no eval multiset poses a training multiset's problem.
    assert {hand_split_key(r) for r in pools["train"]}.isdisjoint({hand_split_key(r) for r in pools["eval"]})


@pytest.mark.parametrize("variant, modality", GP_COMBOS)
def test_gp_train_episodes_never_deal_an_eval_multiset(variant, modality):
    train, evaluation = _gp(variant, modality, split="train"), _gp(variant, modality, split="eval")
    train_hands = {tuple(sorted(train.reset(seed=TRAIN_SEEDS[i])[1]["cards"])) for i in range(3000)}
    eval_hands = {tuple(sorted(evaluation.reset(seed=EVAL_SEEDS[i])[1]["cards"])) for i in range(1000)}
    train_keys, eval_keys = {hand_split_key(h) for h in train_hands}, {hand_split_key(h) for h in eval_hands}
    assert {split_of(key) for key in train_keys} == {"train"} and {split_of(key) for key in eval_keys} == {"eval"}
    assert train_hands.isdisjoint(eval_hands) and train_keys.isdisjoint(eval_keys) and len(eval_hands) > 100


def _gp_digest(variant: str, modality: str) -> str:
    env = _gp(variant, modality)
    rows = [[info["cards"], info["suits"]] for info in (env.reset(seed=seed)[1] for seed in range(300))]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def _virl_digest(variant: str, modality: str, n_seeds: int, **kwargs) -> str:
    env = _virl(variant, modality, **kwargs)
    rows = []
    for seed in range(n_seeds):
        env.reset(seed=seed)
        route = env.unwrapped._route
        points = [[p.observation_text, p.absolute_action, p.relative_action] for p in route.points]
        rows.append([route.city, list(route.instructions), points, env.unwrapped._style.name])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def test_split_all_is_the_default_and_deals_the_episodes_dealt_before_splits_existed():
    # Digests of the hands (seeds 0-299) and routes (seeds 0-59 / 0-39) recorded before issue 11.
    # rule_ood GP hands changed on purpose (the paper's face-card draw), so they are not pinned.
    assert _gp("id", "text").unwrapped.split == "all" and _virl().unwrapped.split == "all"
    assert _gp_digest("id", "text") == "ae936141dc543342"
    assert _gp_digest("id", "image") == "8df3cf45e83fa053"
    assert _gp_digest("visual_ood", "image") == "d524596ee1738dc2"
    assert _virl_digest("id", "text", 60) == _virl_digest("rule_ood", "text", 60) == "f2880691463402c5"
    assert _virl_digest("visual_ood", "image", 40) == "2050b7b2a51747b7"


def test_virl_routes_of_the_training_city_split_near_the_intended_share():
    city = generate_city(0)
    routes = [
        route_split_key(0, a, b)
        for a, b in itertools.permutations(range(len(city.places)), 2)
        if route_legs(city, a, b) is not None
    ]
    share = sum(split_of(key) == "eval" for key in routes) / len(routes)
    assert len(routes) > 1000 and 0.15 < share < 0.25, (len(routes), share)


@pytest.mark.parametrize("variant", ["id", "rule_ood"])
def test_virl_train_episodes_never_draw_an_eval_route(variant):
    train, evaluation = _virl(variant, split="train"), _virl(variant, split="eval")
    train_routes, eval_routes = set(), set()
    for i in range(3000):
        train.reset(seed=TRAIN_SEEDS[i])
        train_routes.add(train.unwrapped._route.split_key)
    for i in range(1000):
        evaluation.reset(seed=EVAL_SEEDS[i])
        eval_routes.add(evaluation.unwrapped._route.split_key)
    assert {split_of(key) for key in train_routes} == {"train"} and {split_of(key) for key in eval_routes} == {"eval"}
    assert train_routes.isdisjoint(eval_routes) and len(eval_routes) > 100
    assert all(key.startswith("virl:city0:") for key in train_routes | eval_routes)


def test_virl_visual_ood_routes_are_all_eval_and_never_trained_on():
    assert _virl_digest("visual_ood", "image", 20, split="eval") == _virl_digest("visual_ood", "image", 20)
    with pytest.raises(ValueError, match="visual_ood cities are never trained on"):
        _virl("visual_ood", "image", split="train")
    with pytest.raises(ValueError, match="visual_ood city seed"):
        _virl("id", split="train", city_seed=OOD_CITY_SEED_BASE + 3)
    with pytest.raises(ValueError, match="split='heldout' is unknown"):
        _virl(split="heldout")
