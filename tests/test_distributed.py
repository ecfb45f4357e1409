"""Training on several processes: the script under ``accelerate launch``, two CPU processes over gloo.

The launch test is the real thing on the tiny model: torchrun's launcher starts two ranks, DDP
averages their gradients, and rank 0 alone writes. It checks what would break first in a multi-GPU
run: that both ranks stepped, on different rows, ended with the same weights, and that the adapter
on disk is rank 0's; then that a stopped run resumes on both ranks from rank 0's checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slipcore_nb import distributed
from slipcore_nb.llama_server import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "accelerate"


def test_ranks_come_from_the_launcher_environment():
    assert distributed.Ranks.from_env({}) == distributed.Ranks(0, 0, 1)
    ranks = distributed.Ranks.from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (ranks.rank, ranks.local_rank, ranks.world_size, ranks.main, ranks.distributed) == (3, 1, 4, False, True)
    assert distributed.sft_kwargs(ranks) == {"ddp_find_unused_parameters": False}
    assert distributed.sft_kwargs(distributed.Ranks()) == {}


@pytest.mark.parametrize("env, mode, shards", [
    ({}, "DDP", False),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, "DeepSpeed ZeRO-2", False),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "DeepSpeed ZeRO-3", True),
    ({"ACCELERATE_USE_FSDP": "true"}, "FSDP", True),
])
def test_the_launch_mode_decides_whether_rank_0_can_score_alone(monkeypatch, env, mode, shards):
    for key in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_USE_FSDP"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ranks = distributed.Ranks(0, 0, 2)
    assert (ranks.mode, ranks.shards_weights) == (mode, shards)
    assert distributed.Ranks().mode == "one process" and not distributed.Ranks().shards_weights


def test_summary_counts_rows_that_two_ranks_trained_on():
    reports = [{"rank": 0, "steps": 2, "row_digests": ["a", "b", "c"]},
               {"rank": 1, "steps": 2, "row_digests": ["c", "d", "d"]}]
    summary = distributed.summarize(reports)
    assert summary["rows_on_several_ranks"] == 1  # "c"; "d" twice on one rank is not a shared row
    assert summary["ranks"] == [{"rank": 0, "steps": 2}, {"rank": 1, "steps": 2}]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_each_accelerate_config_loads_and_documents_its_command(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.distributed_type in ("MULTI_GPU", "DEEPSPEED", "FSDP")
    assert config.mixed_precision == "no", "precision is the script's choice (bf16 or fp16 by GPU)"
    comment = path.read_text().split("\ncompute_environment")[0]
    assert f"accelerate launch --config_file configs/accelerate/{path.name} " in comment
    assert "scripts/train.py" in comment
    zero_stage = (yaml.safe_load(path.read_text()).get("deepspeed_config") or {}).get("zero_stage")
    assert (zero_stage == 3 or config.distributed_type == "FSDP") == ("no in-process scoring" in comment or
                                                                    "skips its in-process" in comment)


def _launch(out: Path, cache: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_ddp.yaml"),
               "--main_process_port", str(free_port()), str(ROOT / "scripts" / "train.py"),
               "--model", "tiny", "--max-steps", "4", "--save-steps", "2", "--eval-limit", "2", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SLIPCORE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("SLIPCORE_BACKEND", None)
    done = subprocess.run(command, capture_output=True, text=True, cwd=out.parent, env=env, timeout=900)
    (out.parent / "launch.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return done


def _saved_adapter_digest(out: Path) -> str:
    from safetensors.torch import load_file

    return distributed.weights_digest(load_file(out / "lora" / "adapter_model.safetensors"))


def test_two_cpu_processes_train_one_model_and_rank_0_saves_it(tmp_path):
    out = tmp_path / "out"
    done = _launch(out, tmp_path / "cache")
    assert "processes: DDP, rank 0 of 2" in done.stdout
    assert done.stdout.count("adapter: ") == 1, "only rank 0 reports writing the adapter"
    record = json.loads((out / "train_metrics.json").read_text())["distributed"]
    assert record["mode"] == "DDP" and record["world_size"] == 2
    assert [rank["steps"] for rank in record["ranks"]] == [4, 4]
    assert all(rank["rows_batched"] >= 4 for rank in record["ranks"])
    assert record["rows_on_several_ranks"] == 0, "each rank must train on its own share of the data"
    digests = {rank["adapter_sha256"] for rank in record["ranks"]}
    assert digests == {_saved_adapter_digest(out)}, "ranks out of sync, or the file is not rank 0's weights"
    first_rows = record["ranks"][0]["rows_batched"]

    # A run stopped after step 2 goes on from rank 0's checkpoint on both ranks.
    shutil.rmtree(out / "checkpoints" / "tiny" / "checkpoint-4")
    done = _launch(out, tmp_path / "cache")
    assert "Resuming" in done.stdout and "checkpoint-2" in done.stdout
    record = json.loads((out / "train_metrics.json").read_text())["distributed"]
    assert [rank["steps"] for rank in record["ranks"]] == [4, 4]
    assert all(rank["rows_batched"] < first_rows for rank in record["ranks"]), "resumed ranks redid early steps"
    assert {rank["adapter_sha256"] for rank in record["ranks"]} == {_saved_adapter_digest(out)}
