"""The reliability benchmark's quick form end to end: the tiny model trains, every split is scored, and
06's conversations run through a real llama-server in all three decoding modes."""

import json
import subprocess
import sys

from benchmarks import reliability
from benchmarks.common import REPO
from slipcore_nb import dataset


def test_quick_reliability_writes_a_stamped_result(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.reliability", "--quick", "--seeds", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "reliability.json").read_text())
    assert len(data["stamp"]["commit"]) == 40 and data["stamp"]["data_sha256"] == reliability.stamp(
        dataset.DATA_DIR)["data_sha256"]
    (order,) = data["orders"]
    assert order["settings"]["seed"] == 1 and order["settings"]["max_steps"] == 8
    assert set(order["messages"]) == set(reliability.SPLITS)
    for split in reliability.SPLITS:
        assert order["messages"][split]["n"] == 8 and set(reliability.FIELDS) <= set(order["messages"][split])
    modes = order["conversations"]
    assert set(modes) == set(reliability.MODES) and all(modes[m]["conversations"] == 2 for m in modes)
    assert modes["state"]["valid"] == 100.0 and modes["syntax"]["valid"] == 100.0
    # The state grammar fixes conv, turn, src/dst: only the move (and what rides on it) can be wrong.
    assert all(row["first wrong field"] in ("act_frame", "rules") for row in modes["state"]["wrong"])
    table = (tmp_path / "reliability.md").read_text()
    assert "eval_guide" in table and "| state |" in table and data["stamp"]["commit"][:10] in table


def test_unknown_arguments_are_refused_by_name(tmp_path):
    for args, says in ((["--seeds", "one"], "argument --seeds: 'one' is not an int"),
                       (["--adapter", str(tmp_path)], "adapter_config"), (["--seeds", ""], "argument --seeds"),
                       (["--steps", "0"], "argument --steps: '0' is out of range")):
        done = subprocess.run([sys.executable, "-m", "benchmarks.reliability", *args], cwd=REPO,
                              capture_output=True, text=True)
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
