"""scripts/serve_vllm.py: the vLLM command and grammar it prints are built from this run's files.

vLLM itself needs CUDA and is not installed here; what is checked is what a user copies: the
`vllm serve` command (base, adapters, LoRA rank) and the grammar file, generated from the protocol.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from slipcore_nb.grammar import nslip_gbnf

ROOT = Path(__file__).resolve().parent.parent


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLIPCORE_OUTPUT_DIR": str(out), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "serve_vllm.py"), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_the_printed_command_serves_the_16_bit_base_with_this_runs_adapter(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"name": "unsloth/Qwen2.5-7B-bnb-4bit"}))
    done = _run(tmp_path, "--lora", "planner=/adapters/planner", "--lora", "critic=/adapters/critic")
    assert done.returncode == 0, done.stderr
    command = shlex.split(next(line for line in done.stdout.splitlines() if line.startswith("vllm serve")))
    assert command[:3] == ["vllm", "serve", "unsloth/Qwen2.5-7B"]  # LoRA goes on the 16-bit twin
    lora = command.index("--lora-modules")
    assert command[lora + 1:lora + 3] == ["planner=/adapters/planner", "critic=/adapters/critic"]
    assert command[command.index("--max-lora-rank") + 1] == "16" and "--enable-lora" in command
    assert (tmp_path / "nslip.gbnf").read_text() == nslip_gbnf()


def test_merged_serving_needs_no_adapter_and_a_missing_run_is_named(tmp_path):
    done = _run(tmp_path, "--merged")
    assert done.returncode == 0 and f"vllm serve {tmp_path / 'merged'} " in done.stdout
    assert "--enable-lora" not in done.stdout
    done = _run(tmp_path)
    assert done.returncode != 0 and "no outputs/model.json" in done.stderr
