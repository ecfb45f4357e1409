#!/usr/bin/env python
"""The CUDA path end to end, offline, in a few minutes on one GPU (``make gpu-check``).

Everything the notebooks do on a GPU, on models built here in seconds (no hub):

1. the GPU and its precision: ``Hardware.gpu_bf16`` against Unsloth's own ``is_bfloat16_supported()``;
   the SFTConfig built for this GPU (bf16) and for a simulated T4 (fp16), both accepted by TRL;
2. the tiny Llama and the tiny Qwen2 (the project's tokenizer), each loaded in 4-bit by
   bitsandbytes through Unsloth, trained by Unsloth's GPU trainer with ``adamw_8bit`` (the Qwen2 a
   few more steps in fp16, as on a T4), merged to 16-bit through Unsloth's ``save_pretrained_merged``
   onto the local 16-bit base, and the merge checked against the trained model's logits;
3. the Llama's merged folder to GGUF (f16 and Q4_K_M) with llama.cpp's converter, llama.cpp with
   every layer on the GPU, and greedy parity between the merged model (PyTorch, GPU) and the f16 GGUF;
4. ``scripts/train.py`` under ``accelerate launch`` (configs/accelerate/ddp.yaml, one process
   per visible GPU), as docs/scaling.md tells users to run it.

Each step is timed; the record goes to ``benchmarks/results/gpu_check.json`` (a failed step keeps
its error and the check goes on where it can). Without CUDA it says so in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
from slipcore_nb import whole_files  # noqa: E402 - after the path
from slipcore_nb.arguments import count, positive_number  # noqa: E402
RESULT = REPO / "benchmarks" / "results" / "gpu_check.json"


class Check:
    """Runs named steps, times them, and keeps what each found (or the error it raised)."""

    def __init__(self, out: Path | None = None):
        self.steps: dict[str, dict] = {}
        self.out = out  # rewritten after every step: a check cut off by a time limit keeps what it found
        self.started = time.perf_counter()

    def __call__(self, name: str, function, *args, **kwargs):
        print(f"--- {name}", flush=True)
        start = time.perf_counter()
        try:
            found = function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - recorded, and the check goes on
            self.steps[name] = {"ok": False, "seconds": round(time.perf_counter() - start, 1),
                                "error": f"{type(error).__name__}: {error}",
                                "traceback": traceback.format_exc().splitlines()[-8:]}
            print(f"FAILED {name}: {type(error).__name__}: {error}", flush=True)
            self.save()
            return None
        details = found[0] if isinstance(found, tuple) else found  # (what it found, what the next step needs)
        details = details if isinstance(details, dict) else {}
        self.steps[name] = {"ok": True, "seconds": round(time.perf_counter() - start, 1), **details}
        print(f"ok {name} ({self.steps[name]['seconds']} s): {details}", flush=True)
        self.save()
        return found

    def save(self) -> None:
        if self.out:
            whole_files.write_text(self.out, json.dumps(self.record(), indent=2, default=str) + "\n")

    @property
    def passed(self) -> bool:
        return all(step["ok"] for step in self.steps.values())

    def record(self) -> dict:
        return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
                "command": "make gpu-check", "passed": self.passed, "seconds": round(time.perf_counter() - self.started, 1),
                "steps": self.steps}


def environment() -> dict:
    import torch
    from unsloth import is_bfloat16_supported

    from slipcore_nb import environment as env
    from slipcore_nb.machine import detect_hardware

    hardware = detect_hardware()
    assert hardware.gpu_bf16 == is_bfloat16_supported(), (hardware, is_bfloat16_supported())
    return {"gpu": hardware.gpu, "capability": list(torch.cuda.get_device_capability(0)), "torch": torch.__version__,
            "cuda": torch.version.cuda, "gpu_bf16": hardware.gpu_bf16, "packages": env.package_versions()}


def precision_decisions(work: Path) -> dict:
    """The SFTConfig for this GPU and for a T4 (capability 7.5: fp16, though torch emulates bf16)."""
    import trl

    from slipcore_nb import machine, registry, training

    here = machine.detect_hardware()
    t4 = replace(here, gpu="Tesla T4 (simulated)", gpu_bf16=False)
    config = training.TrainConfig.from_spec(registry.get_spec("tiny"), max_steps=2, output_dir=work)
    decided = {}
    for label, hardware in (("this GPU", here), ("simulated T4", t4)):
        args = trl.SFTConfig(**training.sft_config_kwargs(config, "unsloth", hardware))
        decided[label] = {"bf16": args.bf16, "fp16": args.fp16, "optim": str(args.optim)}
    assert decided["simulated T4"]["fp16"] and not decided["simulated T4"]["bf16"]
    assert decided["this GPU"]["bf16"] == here.gpu_bf16
    return decided


def logits(model, tokenizer, text: str):
    import torch

    from slipcore_nb.loading import compute_device

    with torch.no_grad():
        batch = tokenizer(text, return_tensors="pt").to(compute_device(model))
        return model(**batch).logits[0, -1].float().cpu()


def train_4bit(name: str, steps: int, work: Path, t4: bool = False) -> tuple[dict, object]:
    """Load ``name`` in 4-bit through Unsloth, train ``steps`` steps, keep the trained model for the merge."""
    import bitsandbytes as bnb

    from slipcore_nb import dataset, loading, training

    loaded = loading.load_model(name, load_in_4bit=True)
    assert loaded.backend == "unsloth", loaded.note
    packed = sum(1 for p in loaded.model.parameters() if isinstance(p, bnb.nn.Params4bit))
    assert packed > 0, "no bitsandbytes 4-bit weights after a 4-bit load"
    total, trainable = loading.parameter_counts(loaded.model)
    if t4:
        loaded = replace(loaded, hardware=replace(loaded.hardware, gpu_bf16=False))
    config = training.TrainConfig.from_spec(loaded.spec, max_steps=steps, output_dir=work / f"{name}-run")
    examples = dataset.load_split("train")[:512]
    trainer = training.make_trainer(loaded, examples, config)
    result = training.train(trainer, training.start_run(config, examples, fresh=True))
    losses = [loss for _, loss in result.loss_history]
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # inside accelerate's wrapper
    bits = getattr(getattr(inner, "args", None), "optim_bits", None)  # bitsandbytes keeps it there
    optimizer = f"{type(inner).__module__}.{type(inner).__name__} ({bits}-bit states)"
    found = {"backend": loaded.backend, "note": loaded.note, "four_bit_tensors": packed,
             "parameters": total, "trainable": trainable, "steps": result.steps,
             "bf16": trainer.args.bf16, "fp16": trainer.args.fp16, "optimizer": optimizer,
             "loss_first": round(losses[0], 3), "loss_last": round(losses[-1], 3),
             "train_seconds": round(result.seconds, 1)}
    assert result.steps == steps and losses[-1] < losses[0], found
    assert optimizer.startswith("bitsandbytes") and bits == 8, found  # what args.optim="adamw_8bit" asks for
    return found, loaded


def merge(loaded, work: Path) -> dict:
    """Unsloth's merge of a 4-bit-trained LoRA onto the local 16-bit base, checked against peft.

    The reference is the saved adapter applied by peft to the same 16-bit base in float32: what the
    merge must equal up to 16-bit rounding. The gap to the 4-bit model the LoRA was trained on is
    recorded too (the base's 4-bit quantization error, not a merge error).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from slipcore_nb import export, loading, modelfile, weights
    from slipcore_nb.prompts import PROMPT

    text = PROMPT.prompt("You are the planner agent (id 2). Goal[1]: Add rate limiting. Respond with one nSLIP message.")
    trained = logits(loaded.model, loaded.tokenizer, text)
    adapter = export.save_adapter(loaded.model, loaded.tokenizer, work / f"{loaded.spec.name}-lora")
    base = weights.base_folder(loaded.spec)
    merged = export.merge_to_16bit(loaded.model, loaded.tokenizer, work / f"{loaded.spec.name}-merged", base_dir=base)
    model, tokenizer = loading.load_merged(merged.path)
    ours = logits(model, tokenizer, text)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).cuda(), adapter.path).eval()
    expected = logits(reference, tokenizer, text)
    found = {"merged": str(merged.path), "MB": merged.row()["MB"], "dtype": str(model.dtype),
             "max_logit_gap_vs_peft_16bit": round(float((ours - expected).abs().max()), 4),
             "max_logit_gap_vs_4bit_trained": round(float((ours - trained).abs().max()), 4),
             "same_argmax_as_peft": int(ours.argmax()) == int(expected.argmax())}
    assert found["max_logit_gap_vs_peft_16bit"] < 0.25 and found["same_argmax_as_peft"], found
    return found


def gguf_on_gpu(merged_dir: str, work: Path, prompts: int) -> dict:
    """f16 + Q4_K_M GGUFs, llama.cpp with every layer on the GPU, greedy parity with PyTorch on the GPU."""
    import llama_cpp

    from slipcore_nb import answering, dataset, evaluate, export, loading
    from slipcore_nb.native import run_in_child
    from slipcore_nb.prompts import PROMPT

    assert llama_cpp.llama_supports_gpu_offload(), "llama-cpp-python was built without GPU offload"
    ggufs = export.to_gguf(merged_dir, work / "gguf", types=("f16", "q4_k_m"), name="tiny")
    buffers = run_in_child(_load_buffers, str(ggufs["f16"].path), what="llama.cpp loading the f16 GGUF on the GPU")
    assert any(name.startswith("CUDA") for name in buffers), buffers
    examples = dataset.load_split("eval")[:prompts]
    instructions = [ex["input"] for ex in examples]
    modelfile = modelfile.write_modelfile(ggufs["f16"].path, out_dir=work / "gguf" / "ollama-f16").modelfile
    answers = answering.answer(instructions, modelfile, runtime="llama.cpp")
    model, tokenizer = loading.load_merged(merged_dir)
    budget = evaluate.answer_budget(tokenizer, examples)
    start = time.perf_counter()
    torch_raw = evaluate.generate(model, tokenizer, [PROMPT.prompt(i) for i in instructions], max_new_tokens=budget)
    torch_seconds = time.perf_counter() - start
    ours = [row["answer"] for row in evaluate.score_outputs(examples, torch_raw, tokenizer.eos_token).rows]
    theirs = [row["answer"] for row in evaluate.score_outputs(examples, answers.texts).rows]
    parity = 100 * sum(a == b for a, b in zip(ours, theirs)) / len(ours)
    found = {"buffers": sorted(buffers), "reason": answers.reason, "prompts": len(instructions),
             "llama_cpp_messages_per_second": round(answers.messages_per_second, 1),
             "pytorch_messages_per_second": round(len(torch_raw) / torch_seconds, 1),
             "f16_parity_percent": round(parity, 1), "MB": {k: a.row()["MB"] for k, a in ggufs.items()},
             "q4_k_m_tensor_types": export.tensor_type_counts(ggufs["q4_k_m"].path)}
    assert parity >= 80, found
    return found


def accelerate_launch(work: Path) -> dict:
    """``scripts/train.py`` under ``accelerate launch`` with the DDP config, one process per visible GPU."""
    import subprocess

    import torch

    gpus = torch.cuda.device_count()
    out = work / "accelerate"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", str(gpus),
               str(REPO / "scripts" / "train.py"), "--model", "tiny", "--max-steps", "6",
               "--eval-limit", "4", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    first = done.stderr.find("Traceback")  # rank 0's own traceback, not the launcher's that follows it
    assert done.returncode == 0, done.stderr[first:first + 4000] if first >= 0 else done.stderr[-4000:]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["steps"] == 6, metrics
    return {"gpus": gpus, "steps": metrics["steps"], "after": metrics["after"],
            "path": [line for line in done.stdout.splitlines() if line.startswith(("backend:", "processes:"))],
            **({"distributed": metrics["distributed"]} if "distributed" in metrics else {})}


def wait_for_build(site: str, timeout: float) -> dict:
    """The record of the background build (scripts/gpu_bundle.py --build-only); fails if the build failed."""
    sys.path.insert(0, str(REPO / "scripts"))
    from gpu_bundle import wait_for_build as wait

    record = wait(site, timeout)
    assert record["ok"], record["error"]
    return record


def _load_buffers(gguf: str) -> list[str]:
    """The buffer types llama.cpp put the weights in (runs in a child process)."""
    from slipcore_nb import answering

    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        answering.load_llama(gguf, n_ctx=256, verbose=True).close()
    return sorted(set(re.findall(r"load_tensors:\s+(\S+) model buffer size", log.getvalue())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=count(), default=60, help="training steps per model (default 60)")
    parser.add_argument("--prompts", type=count(), default=40, help="eval prompts for the parity run (default 40)")
    parser.add_argument("--out", type=Path, default=RESULT, help=f"result file (default {RESULT.relative_to(REPO)})")
    parser.add_argument("--site", default=None,
                        help="site folder whose llama-cpp-python is still being built (make gpu-check): wait for "
                             "its build record before the GGUF step")
    parser.add_argument("--build-wait", type=positive_number, default=900, help="seconds to wait for that build (default 900)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here (torch.cuda.is_available() is False); run `make gpu-check` on a GPU machine.")
        return 0
    os.environ.setdefault("UNSLOTH_AUTO_INSTALL", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model is built here
    check = Check(args.out)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        os.environ["SLIPCORE_CACHE"] = str(work / "cache")
        check("environment", environment)
        check("precision decisions", precision_decisions, work)
        merged_llama = None
        for name in ("tiny", "tiny-qwen2"):
            trained = check(f"{name}: 4-bit load + Unsloth GPU training", train_4bit, name, args.steps, work)
            if trained:
                merged = check(f"{name}: merge onto the 16-bit base", merge, trained[1], work)
                if name == "tiny" and merged:
                    merged_llama = merged["merged"]
                del trained
                torch.cuda.empty_cache()
        check("tiny-qwen2: fp16 training as on a T4", lambda: train_4bit("tiny-qwen2", 10, work / "t4", t4=True)[0])
        check("train.py under accelerate launch (DDP)", accelerate_launch, work)
        if args.site:  # make gpu-check compiles llama.cpp beside the checks above
            check("llama-cpp-python built for CUDA (beside the checks above)", wait_for_build, args.site, args.build_wait)
        if merged_llama:
            check("tiny: GGUF + llama.cpp on the GPU + parity", gguf_on_gpu, merged_llama, work, args.prompts)
    print(f"gpu-check {'PASSED' if check.passed else 'FAILED'} in {check.record()['seconds']} s; wrote {args.out}")
    return 0 if check.passed else 1


if __name__ == "__main__":
    sys.exit(main())
