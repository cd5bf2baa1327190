"""`sftrl data virl` and `sftrl play virl --render` (cluster.cli.envs with the V-IRL entry)."""

import json

from PIL import Image
from typer.testing import CliRunner

from cluster.cli.main import app

runner = CliRunner()


def test_data_virl_writes_chat_records_with_one_picture_per_rail_point(tmp_path):
    out = tmp_path / "virl_vl.jsonl"
    result = runner.invoke(app, ["data", "virl", "--modality", "image", "--n", "12", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12
    for record in records:
        assert [m["role"] for m in record["messages"]][-1] == "assistant"
        content = record["messages"][-1]["content"]  # image records: a list of parts (sft_data.py)
        answer = json.loads(content if isinstance(content, str) else content[0]["text"])
        assert set(answer) == {"current observation", "current instruction", "action"}
        assert record["messages"][1]["content"][0] == {"type": "image"}
        assert Image.open(tmp_path / record["images"][0]).size == (644, 702)
    assert len({r["images"][0] for r in records}) == 12  # every oracle turn is at a new rail point


def test_data_virl_text_records_have_no_images(tmp_path):
    out = tmp_path / "virl_l.jsonl"
    result = runner.invoke(app, ["data", "virl", "--variant", "rule_ood", "--n", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all("images" not in r and "slightly left" in r["messages"][1]["content"] for r in records)


def test_play_virl_takes_typed_actions_and_renders(tmp_path):
    picture = tmp_path / "street.png"
    result = runner.invoke(
        app, ["play", "virl", "--seed", "1", "--render", str(picture)], input="forward()\nforward()\n"
    )
    assert result.exit_code == 0, result.output
    assert "[Directions]" in result.output and "reward -1" in result.output and "episode over" in result.output
    assert Image.open(picture).size == (644, 702)
