"""SFT export: oracle chat records from training seeds, replayable, with images for VL."""

import json

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import envs  # noqa: F401  (registers the ids)
from envs.general_points.cards import hand_split_key
from envs.seeds import EVAL_SEEDS, TRAIN_SEEDS
from envs.sft_data import iter_oracle_turns, training_seeds, write_sft_records
from envs.splits import split_of


def test_training_seeds_come_from_the_training_range_only():
    seeds = training_seeds(0, 500)
    assert all(s in TRAIN_SEEDS and s not in EVAL_SEEDS for s in seeds)
    assert seeds == training_seeds(0, 500) and seeds != training_seeds(1, 500)


def test_text_records_are_chat_records_whose_answer_wins_the_episode(tmp_path):
    env = gym.make("sftrl/GeneralPoints-v0", variant="id", modality="text")
    result = write_sft_records(env, tmp_path / "gp.jsonl", n_records=20, seed=0)
    lines = (tmp_path / "gp.jsonl").read_text().splitlines()
    assert result.n_records == len(lines) == 20 and result.n_images == 0
    seeds = training_seeds(0, 20)
    for line, seed in zip(lines, seeds, strict=True):
        record = json.loads(line)
        assert set(record) == {"messages"}
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["system", "user", "assistant"]
        obs, _ = env.reset(seed=seed)
        assert obs["messages"] == record["messages"][:-1]  # same prompt as the RL env
        assert env.step(record["messages"][-1]["content"])[1] == 5.0


def test_image_records_point_at_pngs_of_the_hand(tmp_path):
    env = gym.make("sftrl/GeneralPoints-v0", variant="id", modality="image", image_size=(240, 240))
    result = write_sft_records(env, tmp_path / "sub" / "vl.jsonl", n_records=3, seed=5)
    assert result.n_images == 3
    for line, seed in zip((tmp_path / "sub" / "vl.jsonl").read_text().splitlines(), training_seeds(5, 3), strict=True):
        record = json.loads(line)
        (path,) = record["images"]
        assert not path.startswith("/") and path.startswith("vl_images/")
        picture = np.asarray(Image.open(tmp_path / "sub" / path).convert("RGB"))
        assert np.array_equal(picture, env.reset(seed=seed)[0]["image"])
        assert record["messages"][1]["content"][0] == {"type": "image"}
        assert all(isinstance(m["content"], list) for m in record["messages"])
        system = env.reset(seed=seed)[0]["messages"][0]["content"]
        assert record["messages"][0]["content"] == [{"type": "text", "text": system}]


def test_a_train_split_env_exports_training_hands_only_and_an_eval_split_env_is_refused(tmp_path):
    env = gym.make("sftrl/GeneralPoints-v0", variant="id", modality="text", split="train")
    write_sft_records(env, tmp_path / "gp.jsonl", n_records=400, seed=0)
    hands = set()
    for line in (tmp_path / "gp.jsonl").read_text().splitlines():
        task = json.loads(line)["messages"][1]["content"]
        hands.add(tuple(sorted(task.split("four playing cards: ")[1].split(".")[0].split(", "))))
    assert len(hands) > 100 and {split_of(hand_split_key(hand)) for hand in hands} == {"train"}
    held_out = gym.make("sftrl/GeneralPoints-v0", split="eval")
    with pytest.raises(ValueError, match="split='eval'.*split='train'"):
        write_sft_records(held_out, tmp_path / "leak.jsonl", n_records=5)
    with pytest.raises(ValueError, match="split='eval'"):
        iter_oracle_turns(gym.make("sftrl/VIRL-v0", split="eval"), [0])
    assert not (tmp_path / "leak.jsonl").exists()


def test_records_load_as_one_arrow_table_like_hf_datasets(tmp_path):
    pa_json = pytest.importorskip("pyarrow.json")
    for modality in ("text", "image"):
        env = gym.make("sftrl/GeneralPoints-v0", modality=modality, image_size=(100, 100))
        write_sft_records(env, tmp_path / f"{modality}.jsonl", n_records=4)
        table = pa_json.read_json(tmp_path / f"{modality}.jsonl")
        assert table.num_rows == 4 and "messages" in table.column_names


def test_every_turn_of_a_multi_turn_episode_becomes_a_record():
    class OracleThatFailsFirst(gym.Wrapper):
        """An oracle wrong on the first attempt, to exercise multi-turn export."""

        def __init__(self, env):
            super().__init__(env)
            self.calls = 0

        def oracle_action(self):
            self.calls += 1
            return "wrong" if self.calls % 2 else self.env.unwrapped.oracle_action()

        @property
        def unwrapped(self):
            return self

    env = OracleThatFailsFirst(gym.make("sftrl/GeneralPoints-v0"))
    turns = list(iter_oracle_turns(env, [1, 2]))
    assert [len(t.messages) for t in turns] == [3, 5, 3, 5]
    assert turns[1].messages[2] == {"role": "assistant", "content": "wrong"}
    assert turns[1].messages[3]["content"].startswith("You failed this trial because")
