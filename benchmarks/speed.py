"""Speed, side by side in one run, reported as ratios:

    python -m benchmarks.speed [--quick] [--only training,generation,notebooks]

(a) training tokens/s: Unsloth's path vs plain transformers + peft on the same model, batch, data and
    number of steps (warm-up steps not timed), counting non-pad tokens. Each backend runs in its own
    process (``--one-backend``), because importing unsloth patches TRL for the whole process.
(b) generation messages/s on the same eval prompts: PyTorch (the merged model, evaluate.generate,
    batched and one at a time) vs llama.cpp GGUF f16 vs Q4_K_M (answering.answer, runtime="llama.cpp").
    The model: notebooks 03-04's export (outputs/export.json) if it is there, else the adapter that
    benchmarks.quality_curve kept, else the untrained base model; the JSON says which.
(c) wall time of each notebook executed headless in order (runner.run_notebook) on the tiny model,
    with a temporary SLIPCORE_OUTPUT_DIR: what ``make test``'s nbval run costs per notebook.
Writes ``results/speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slipcore_nb.training import ATTENTION_KERNELS

from slipcore_nb import whole_files
from slipcore_nb.arguments import count, model_name, names, notebook_prefixes

from .common import REPO, finish, footer, header, md_table, results_dir, work_dir, write_results

MODULE = "benchmarks.speed"
PARTS = ("training", "generation", "notebooks")
GGUF_KINDS = ("f16", "q8_0", "q4_k_m")


# ---------------------------------------------------------------------------- (a) training throughput


def one_backend(backend: str, attention: str, skip_input_cast: bool, model: str, warmup: int, timed: int,
                out: Path) -> None:
    """Child process: train ``warmup + timed`` steps on one backend, attention kernel and LoRA input cast;
    per-step seconds and non-pad tokens."""
    import torch
    from transformers import TrainerCallback

    from slipcore_nb import dataset, loading, training

    start = time.perf_counter()
    loaded = loading.load_model(model, backend=backend)
    load_seconds = time.perf_counter() - start
    steps = warmup + timed
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        # No checkpoint inside the measured steps.
        config = training.TrainConfig.from_spec(loaded.spec, max_steps=steps, output_dir=tmp, save_steps=10**6)
        examples = dataset.load_split("train")
        trainer = training.make_trainer(loaded, examples, config)
        tokens, padded = [], []
        collate = trainer.data_collator

        def counting(features):  # same batches on both backends (same seed, same sampler)
            batch = collate(features)
            tokens.append(int(batch["attention_mask"].sum()))
            padded.append(int(batch["input_ids"].numel()))
            return batch

        trainer.data_collator = counting
        step_seconds: list[float] = []

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                self.t = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                step_seconds.append(time.perf_counter() - self.t)

        trainer.add_callback(Clock())
        result = training.train(trainer, training.start_run(config, examples, fresh=True), attention=attention,
                                skip_input_cast=skip_input_cast)
    if backend == "transformers":
        assert "unsloth" not in sys.modules, "the plain path must run without unsloth imported"
    timed_seconds = sum(step_seconds[warmup:])
    timed_tokens = sum(tokens[warmup:steps])
    param = next(p for p in loaded.model.parameters() if p.requires_grad)
    whole_files.write_text(out, json.dumps({
        "backend": loaded.backend, "attention": attention, "auto_picks": training.auto_attention_kernel(loaded.model),
        "skip_lora_input_cast": skip_input_cast,
        "note": loaded.note, "model": loaded.spec.name,
        "weights_dtype": str(next(loaded.model.parameters()).dtype), "lora_dtype": str(param.dtype),
        "sft_bf16": bool(trainer.args.bf16), "torch_threads": torch.get_num_threads(),
        "batch_size": config.batch_size, "warmup_steps": warmup, "timed_steps": timed,
        "steps_done": result.steps, "load_seconds": round(load_seconds, 1),
        "step_seconds": [round(s, 3) for s in step_seconds], "tokens_per_step": tokens[:steps],
        "padded_tokens_per_step": padded[:steps], "seconds_per_step": round(timed_seconds / timed, 3),
        "tokens_per_second": round(timed_tokens / timed_seconds, 1),
        "loss_history": result.loss_history, "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }, indent=2))


# (backend, attention kernel, skip the LoRA input cast as training.train does); the last leg keeps peft's cast.
LEGS = tuple((backend, attention, True) for backend in ("unsloth", "transformers") for attention in ("math", "default"))
LEGS += (("unsloth", "math", False),)


def leg_name(backend: str, attention: str, skip_input_cast: bool = True) -> str:
    """``unsloth, math attention``: the math kernel forced; ``unsloth, default attention``: PyTorch's pick.
    The library trains with whichever ``training.auto_attention_kernel`` picks (the JSON's ``auto_picks``),
    skipping the LoRA input cast (``training.skip_lora_input_cast``) where that applies."""
    return f"{backend}, {attention} attention" + ("" if skip_input_cast else ", peft's LoRA input cast kept")


def training_speed(model: str, warmup: int, timed: int, log) -> dict:
    runs = {}
    for backend, attention, skip_input_cast in LEGS:
        name = leg_name(backend, attention, skip_input_cast)
        log(f"(a) training: {name}, {model}, {warmup} warm-up + {timed} timed steps (own process)")
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            out = Path(handle.name)
        env = {**os.environ, "SLIPCORE_BACKEND": backend}
        cmd = [sys.executable, "-m", MODULE, "--one-backend", backend, "--attention", attention, "--model", model,
               "--warmup", str(warmup), "--timed", str(timed), "--child-out", str(out)]
        cmd += [] if skip_input_cast else ["--keep-lora-input-cast"]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{name} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        runs[name] = json.loads(out.read_text())
        out.unlink()
        log(f"    {runs[name]['tokens_per_second']} tokens/s, {runs[name]['seconds_per_step']} s/step")
    same_batches = len({tuple(run["tokens_per_step"]) for run in runs.values()}) == 1

    def ratio(a: str, b: str) -> float:
        return round(runs[a]["tokens_per_second"] / runs[b]["tokens_per_second"], 2)

    library = {backend: leg_name(backend, runs[leg_name(backend, "math")]["auto_picks"])
               for backend in ("unsloth", "transformers")}  # the run each backend trains like in the library
    return {"model": model, "runs": runs, "same_batches": same_batches, "library_runs": library,
            "unsloth_over_transformers": ratio(library["unsloth"], library["transformers"]),
            "math_over_default_attention": {backend: ratio(leg_name(backend, "math"), leg_name(backend, "default"))
                                            for backend in ("unsloth", "transformers")},
            "skipped_over_kept_lora_input_cast": ratio(leg_name("unsloth", "math"), leg_name("unsloth", "math", False))}


# ---------------------------------------------------------------------------- (b) generation


def _exported_by_notebooks(model: str) -> dict | None:
    from slipcore_nb import artifacts

    if not artifacts.path("export.json").is_file():
        return None
    exported = artifacts.load_json("export.json")
    needed = [exported.get("merged"), *(exported.get(k, {}).get("modelfile") for k in GGUF_KINDS)]
    if exported.get("model") != model or not all(p and Path(p).exists() for p in needed):
        return None
    return {"source": f"notebooks 03-04 export ({artifacts.path('export.json')})", "merged": exported["merged"],
            **{kind: exported[kind]["modelfile"] for kind in GGUF_KINDS}}


def prepare_served_model(model: str, work: Path, log) -> dict:
    """Merged folder + f16/Q4_K_M GGUFs with their Modelfiles, from the best trained model at hand."""
    from slipcore_nb import export, loading, modelfile

    found = _exported_by_notebooks(model)
    if found:
        return found
    adapter = work / "curve-lora"
    if (adapter / "adapter_config.json").is_file():
        source = f"adapter kept by benchmarks.quality_curve ({adapter})"
        loaded = loading.load_trained(adapter, model)
    else:
        source = f"untrained {model} (no export or benchmark adapter found; LoRA at init = the base model)"
        loaded = loading.load_model(model, backend="transformers")
    log(f"(b) building the served model from: {source}")
    target = work / "speed-export"
    merged = export.merge_to_16bit(loaded.model, loaded.tokenizer, target / "merged")
    ggufs = export.to_gguf(merged.path, target / "gguf", types=GGUF_KINDS)
    files = {kind: str(modelfile.write_modelfile(ggufs[kind].path, out_dir=target / "gguf" / f"ollama-{kind}").modelfile)
             for kind in ggufs}
    return {"source": source, "merged": str(merged.path), **files}


def generation_speed(model: str, n: int, work: Path, log) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slipcore_nb import answering, dataset, evaluate
    from slipcore_nb.native import NativeCrash
    from slipcore_nb.prompts import PROMPT

    served = prepare_served_model(model, work, log)
    examples = dataset.load_split("eval")[:n]
    instructions = [ex["input"] for ex in examples]
    tokenizer = AutoTokenizer.from_pretrained(served["merged"])
    budget = evaluate.answer_budget(tokenizer, examples)
    rows = {}

    merged = AutoModelForCausalLM.from_pretrained(served["merged"], dtype=torch.float32)
    prompts = [PROMPT.prompt(i) for i in instructions]
    evaluate.generate(merged, tokenizer, prompts[:1], max_new_tokens=2)  # warm-up
    default_threads = torch.get_num_threads()
    llama_threads = answering.llama_threads()
    for label, batch, threads in (("PyTorch merged, batch 16", 16, default_threads),
                                  ("PyTorch merged, batch 1", 1, default_threads),
                                  (f"PyTorch merged, batch 1, {llama_threads} thread(s)", 1, llama_threads)):
        if label in rows:  # one core: the thread-matched row is the row above
            continue
        log(f"(b) generation: {label}, {n} prompts")
        torch.set_num_threads(threads)
        try:
            start = time.perf_counter()
            raw = evaluate.generate(merged, tokenizer, prompts, max_new_tokens=budget, batch_size=batch)
            seconds = time.perf_counter() - start
        finally:
            torch.set_num_threads(default_threads)
        rows[label] = _gen_row(examples, raw, tokenizer, seconds, "pytorch", threads)
    del merged
    runs = [(kind, f"llama.cpp GGUF {kind.upper()}", False) for kind in GGUF_KINDS]
    # llama.cpp's extra CPU buffers (weights repacked for its AMX/AVX kernels) are off in answering.load_llama
    # because that path segfaulted on an AMX Xeon; these rows measure what turning them off costs here.
    runs += [(kind, f"llama.cpp GGUF {kind.upper()}, extra CPU buffers", True) for kind in ("q8_0", "q4_k_m")]
    for kind, label, extra in runs:
        log(f"(b) generation: {label}, {n} prompts")
        try:
            answers = answering.answer(instructions, served[kind], runtime="llama.cpp", max_tokens=budget,
                                   extra_cpu_buffers=extra)
        except NativeCrash as crash:  # what the extra buffers did on an AMX Xeon: recorded, not fatal
            rows[label] = {"runtime": "llama.cpp", "crashed": str(crash).splitlines()[0]}
            continue
        rows[label] = _gen_row(examples, answers.texts, tokenizer, answers.seconds, answers.runtime,
                               llama_threads, load_seconds=answers.load_seconds)
    base = rows["PyTorch merged, batch 16"]["messages_per_second"]
    for row in rows.values():
        if "messages_per_second" in row:
            row["vs_pytorch_batch16"] = round(row["messages_per_second"] / base, 2)
    return {"model": model, "served": served, "prompts": n, "max_new_tokens": budget, "rows": rows,
            "note": ("PyTorch stops at EOS or max_new_tokens; llama.cpp also at the Modelfile's stops "
                     "(EOS, '###', newline), so an untrained model's prose is cut earlier there (compare answer tokens). "
                     "llama.cpp runs on half the cores (answering.load_llama); PyTorch on torch's default threads "
                     "and once on llama.cpp's thread count. ratio = messages/s over PyTorch batch 16.")}


def _gen_row(examples, raw, tokenizer, seconds, runtime, threads, load_seconds=None) -> dict:
    from slipcore_nb import evaluate

    report = evaluate.score_outputs(examples, raw, tokenizer.eos_token)
    new_tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in raw)
    row = {"runtime": runtime, "threads": threads, "seconds": round(seconds, 2),
           "messages_per_second": round(len(raw) / seconds, 2),
           "mean_answer_tokens": round(new_tokens / len(raw), 1),
           "valid": report.rate("valid"), "protocol_correct": report.rate("protocol_correct")}
    if load_seconds is not None:
        row["load_seconds"] = round(load_seconds, 2)
    return row


# ---------------------------------------------------------------------------- (c) notebooks


def notebook_times(quick: bool, prefixes: list[str], work: Path, log) -> dict:
    from slipcore_nb import artifacts, runner

    env = {"SLIPCORE_MODEL": "tiny"}
    if quick:
        env.update(SLIPCORE_MAX_STEPS="10", SLIPCORE_EVAL_LIMIT="8")
    saved = {k: os.environ.get(k) for k in (*env, "SLIPCORE_OUTPUT_DIR", "SLIPCORE_BACKEND")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-notebooks-") as tmp:
        os.environ.update(env, SLIPCORE_OUTPUT_DIR=tmp)  # the kernels inherit this environment
        os.environ.pop("SLIPCORE_BACKEND", None)
        try:
            for nb in artifacts.notebooks():
                if prefixes and not any(nb.name.startswith(p) for p in prefixes):
                    continue
                log(f"(c) notebook {nb.name} on tiny")
                _, seconds = runner.run_notebook(nb, work / "executed-notebooks")
                rows.append({"notebook": nb.name, "seconds": round(seconds, 1)})
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return {"env": env, "rows": rows, "total_seconds": round(sum(r["seconds"] for r in rows), 1),
            "executed_copies": str(work / "executed-notebooks")}


# ---------------------------------------------------------------------------- report


def markdown(data: dict) -> str:
    md = ["### Speed", ""]
    if "training" in data:
        t = data["training"]
        u, p = (t["runs"][t["library_runs"][backend]] for backend in ("unsloth", "transformers"))
        math = t["math_over_default_attention"]
        md += [f"**Training throughput** ({t['model']}, LoRA r16, batch {u['batch_size']}, {u['timed_steps']} timed "
               f"steps after {u['warmup_steps']} warm-up, same batches: {'yes' if t['same_batches'] else 'NO'}): "
               f"Unsloth's path is **{t['unsloth_over_transformers']}x** plain transformers + peft, each with the "
               f"attention kernel the library picks for it (`training.auto_attention_kernel`); the math kernel is "
               f"{math['unsloth']}x PyTorch's default on Unsloth's path and {math['transformers']}x on plain "
               "transformers; skipping peft's LoRA input cast (`training.skip_lora_input_cast`) is "
               f"{t['skipped_over_kept_lora_input_cast']}x keeping it on Unsloth's path with the math kernel.", "",
               md_table([{"run": name, "library picks": "yes" if name in t["library_runs"].values() else "",
                          "weights": r["weights_dtype"].replace("torch.", ""),
                          "SFTConfig bf16": "yes" if r["sft_bf16"] else "no",
                          "s/step": r["seconds_per_step"], "non-pad tokens/s": r["tokens_per_second"],
                          "ratio": round(r["tokens_per_second"] / p["tokens_per_second"], 2)}
                         for name, r in t["runs"].items()]), ""]
    if "generation" in data:
        g = data["generation"]
        md += [f"**Generation** ({g['prompts']} held-out prompts, greedy, up to {g['max_new_tokens']} new tokens; "
               f"model: {g['served']['source']}):", "",
               md_table([{"runtime": name, "threads": r.get("threads", ""),
                          "messages/s": r.get("messages_per_second", "crashed"),
                          "ratio": r.get("vs_pytorch_batch16", ""), "answer tokens": r.get("mean_answer_tokens", ""),
                          "valid %": r.get("valid", ""),
                          "protocol_correct %": r.get("protocol_correct", "")} for name, r in g["rows"].items()]),
               "", g["note"], "", *buffer_cost_lines(g["rows"])]
    if "notebooks" in data:
        n = data["notebooks"]
        env = ", ".join(f"{k}={v}" for k, v in n["env"].items())
        md += [f"**Notebooks** executed headless in order ({env}, fresh kernel each, temporary output dir):", "",
               md_table(n["rows"] + [{"notebook": "total", "seconds": n["total_seconds"]}]), ""]
    md.append(footer(data))
    return "\n".join(md)


def buffer_cost_lines(rows: dict) -> list[str]:
    """What keeping llama.cpp's weights in plain CPU buffers (answering.load_llama) costs, per GGUF type."""
    lines = []
    for kind in ("Q8_0", "Q4_K_M"):
        plain, extra = rows.get(f"llama.cpp GGUF {kind}", {}), rows.get(f"llama.cpp GGUF {kind}, extra CPU buffers", {})
        if "crashed" in extra:
            lines.append(f"- {kind}: with extra CPU buffers llama.cpp crashed ({extra['crashed']}); plain buffers "
                         f"{plain.get('messages_per_second')} msg/s.")
        elif plain.get("messages_per_second") and extra.get("messages_per_second"):
            ratio = plain["messages_per_second"] / extra["messages_per_second"]
            lines.append(f"- {kind}: plain CPU buffers {plain['messages_per_second']} msg/s vs extra (repacked) buffers "
                         f"{extra['messages_per_second']} msg/s = **{ratio:.2f}x**; protocol-correct "
                         f"{plain.get('protocol_correct')} % vs {extra.get('protocol_correct')} %.")
    return (["**Cost of the AMX-safe setting** (answering.load_llama keeps weights in plain CPU buffers):", "", *lines, ""]
            if lines else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny model, 1+2 training steps, 8 prompts, notebooks 01-02 only")
    parser.add_argument("--only", type=names(PARTS), default=list(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--model", type=model_name, help="model for (a) and (b) (default smollm2-135m; tiny with --quick)")
    parser.add_argument("--warmup", type=count(0), help="untimed training steps (default 2)")
    parser.add_argument("--timed", type=count(), help="timed training steps (default 6)")
    parser.add_argument("--prompts", type=count(), help="eval prompts for (b) (default 50)")
    parser.add_argument("--notebooks", type=notebook_prefixes, help="notebook name prefixes for (c), comma-separated (default all; 01,02 with --quick)")
    parser.add_argument("--one-backend", choices=("unsloth", "transformers"), help=argparse.SUPPRESS)
    parser.add_argument("--attention", choices=ATTENTION_KERNELS, default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--keep-lora-input-cast", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    model = args.model or ("tiny" if args.quick else "smollm2-135m")
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    timed = args.timed or (2 if args.quick else 6)
    if args.one_backend:
        one_backend(args.one_backend, args.attention, not args.keep_lora_input_cast, model, warmup, timed,
                    args.child_out)
        return 0
    parts = args.only

    def log(text):
        print(text, flush=True)

    data = header(MODULE)
    started = time.perf_counter()
    if "training" in parts:
        data["training"] = training_speed(model, warmup, timed, log)
    if "generation" in parts:
        data["generation"] = generation_speed(model, args.prompts or (8 if args.quick else 50),
                                              work_dir(args.quick), log)
    if "notebooks" in parts:
        prefixes = args.notebooks or (["01", "02"] if args.quick else [])
        data["notebooks"] = notebook_times(args.quick, prefixes, work_dir(args.quick), log)
    data["seconds"] = round(time.perf_counter() - started, 1)
    finish(data)
    write_results(results_dir(args.quick), "speed", data, markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
