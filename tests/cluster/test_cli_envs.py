"""`sftrl data ENV` and `sftrl play ENV` through typer's CliRunner."""

import json

import gymnasium as gym
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cluster.cli.envs import ENVS, gp_typed_answer
from cluster.cli.main import app
from envs.general_points.cards import hand_split_key
from envs.splits import split_of

runner = CliRunner()


def test_data_gp_writes_n_valid_records(tmp_path):
    out = tmp_path / "gp_l_sft.jsonl"
    result = runner.invoke(app, ["data", "gp", "--variant", "id", "--modality", "text", "--n", "25", "--seed", "0",
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 25 and "wrote 25 records" in result.output
    for record in records:
        assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
        assert json.loads(record["messages"][-1]["content"])["formula"]


def test_data_exports_training_hands_only_unless_asked_for_all(tmp_path):
    def exported_splits(*extra):
        out = tmp_path / f"gp{len(extra)}.jsonl"
        result = runner.invoke(app, ["data", "gp", "--n", "300", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        answers = [json.loads(json.loads(line)["messages"][-1]["content"]) for line in out.read_text().splitlines()]
        return {split_of(hand_split_key(answer["cards"])) for answer in answers}

    assert exported_splits() == {"train"}  # default --split train: no evaluation multiset is ever exported
    assert exported_splits("--split", "all") == {"train", "eval"}
    refused = runner.invoke(app, ["data", "gp", "--n", "3", "--out", str(tmp_path / "x.jsonl"), "--split", "eval"])
    assert refused.exit_code == 2 and "--split" in refused.output  # a usage error naming the option


def test_data_gp_image_writes_pictures_and_accepts_env_settings(tmp_path):
    out = tmp_path / "vl.jsonl"
    result = runner.invoke(app, ["data", "gp", "--variant", "visual_ood", "--modality", "image", "--n", "2",
                                 "--out", str(out), "--set", "image_size=[300, 200]"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for line in out.read_text().splitlines():
        (path,) = json.loads(line)["images"]
        assert Image.open(out.parent / path).size == (300, 200)


def test_data_rejects_unknown_env_and_bad_arguments(tmp_path):
    assert runner.invoke(app, ["data", "chess", "--out", str(tmp_path / "x.jsonl")]).exit_code != 0
    result = runner.invoke(app, ["data", "gp", "--variant", "visual_ood", "--modality", "text",
                                 "--out", str(tmp_path / "x.jsonl")])  # fmt: skip
    assert result.exit_code != 0 and "visual_ood" in result.output
    assert runner.invoke(app, ["data", "gp", "--set", "target", "--out", str(tmp_path / "x.jsonl")]).exit_code != 0


def test_play_gp_with_piped_input_reports_feedback_and_success(tmp_path):
    picture = tmp_path / "hand.png"
    args = ["play", "gp", "--seed", "1", "--render", str(picture)]
    first = runner.invoke(app, args, input="")
    assert first.exit_code == 0, first.output
    cards = first.output.split("four playing cards: ")[1].split(".")[0].split(", ")
    assert len(cards) == 4

    env = gym.make("sftrl/GeneralPoints-v0")
    env.reset(seed=1)
    formula = json.loads(env.unwrapped.oracle_action())["formula"]
    result = runner.invoke(app, args, input=f"1+1\n{formula}\n")
    assert result.exit_code == 0, result.output
    assert "You failed this trial because" in result.output and "reward +5" in result.output
    assert "success" in result.output and "episode over" in result.output
    assert np.asarray(Image.open(picture)).shape == (1200, 1200, 3)


def test_play_ends_after_max_attempts_and_on_end_of_input():
    result = runner.invoke(app, ["play", "gp", "--seed", "2", "--set", "max_attempts=2"], input="1\n2\n")
    assert result.exit_code == 0, result.output
    assert "episode over after 2 attempts" in result.output
    assert "(end of input)" in runner.invoke(app, ["play", "gp", "--episodes", "2"], input="1\n").output


def test_gp_typed_answer_wraps_a_formula_and_keeps_json():
    info = {"cards": ["3", "3", "8", "8"], "numbers": [3, 3, 8, 8]}
    assert json.loads(gp_typed_answer(" 8/(3-8/3)\n", info)) == {"cards": info["cards"], "number": [3, 3, 8, 8],
                                                                  "formula": "8/(3-8/3)"}  # fmt: skip
    assert gp_typed_answer('{"formula": "1"}', info) == '{"formula": "1"}'
    assert ENVS["gp"].env_id == "sftrl/GeneralPoints-v0"
