"""Serving nSLIP to agents: today's one-stream llama.cpp vs llama-server variants, side by side in one run.

    python -m benchmarks.serving [--prompts 60] [--quick]

Every variant answers the same held-out messages (the headline split: goals and wordings never seen
in training) from the model notebooks 03-04 exported (else the one benchmarks.speed builds), greedy,
and is scored like notebook 05 — so a faster variant that loses protocol-correct answers shows it.
The "served form" variants ask for the same messages in the short form served agents send
(``eval_served``: about half the prompt tokens), the lever that matters on a compute-bound CPU.
The baseline is what notebook 05 does today: llama-cpp-python, one stream (``answering.answer``). The
variants are llama.cpp's own server (:mod:`slipcore_nb.llama_server`) with N parallel slots and N
concurrent clients, with and without its prompt cache, with the nSLIP grammar, and on q8_0 and
Q4_K_M files. The CPU's bounds are measured in the same run: a float32 matmul's FLOP/s against the
FLOPs a message costs, and memory bandwidth against the bytes one stream reads per token.
Results: ``benchmarks/results/serving.json`` and ``serving.md``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from slipcore_nb.arguments import count, model_name
from slipcore_nb.machine import usable_cores

from .common import finish, footer, header, md_table, results_dir, work_dir, write_results
from .speed import prepare_served_model

MODULE = "benchmarks.serving"
LONG_FORM, SERVED_FORM = "eval_unseen", "eval_served"  # the same messages, worded long or in the served form
# llama.cpp's lookup decoding: draft up to 8 tokens that followed the last 3 anywhere in the context
# (a reply copies the incoming message's ids), verified in one batch.
NGRAM_SPECULATION = ("--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3",
                     "--spec-ngram-simple-size-m", "8", "--spec-draft-n-max", "8")
GOAL_SPEEDUP = 4.0  # issue #12: the best variant at 4x the baseline, protocol-correct within 1 point of it


def server_variant(label: str, slots: int, *, kind: str = "f16", cache_prompt: bool = True, grammar: bool = False,
                   split: str = LONG_FORM, extra_args: tuple[str, ...] = ()) -> dict:
    """One llama-server run as :func:`server_run` takes it: GGUF kind, slots, prompt cache, grammar, prompt form."""
    return {"label": label, "kind": kind, "slots": slots, "cache_prompt": cache_prompt, "grammar": grammar,
            "split": split, "extra_args": extra_args}


def server_variants(slots: int) -> list[dict]:
    """Every variant this benchmark runs, each a separate llama-server."""
    variant = functools.partial(server_variant, slots=slots)
    return [
        variant("llama-server f16, 1 slot, 1 client", slots=1),
        variant(f"llama-server f16, {slots} slots, no prompt cache", cache_prompt=False),
        variant(f"llama-server f16, {slots} slots, prompt cache"),
        variant(f"llama-server f16, {slots} slots, prompt cache, nSLIP grammar", grammar=True),
        variant(f"llama-server q8_0, {slots} slots, prompt cache", kind="q8_0"),
        variant(f"llama-server Q4_K_M, {slots} slots, prompt cache", kind="q4_k_m"),
        variant(f"llama-server f16, {slots} slots, prompt cache, served form", split=SERVED_FORM),
        variant(f"llama-server f16, {slots} slots, prompt cache, served form, nSLIP grammar", grammar=True,
                split=SERVED_FORM),
        variant(f"llama-server q8_0, {slots} slots, prompt cache, served form", kind="q8_0", split=SERVED_FORM),
        variant(f"llama-server f16, {slots} slots, prompt cache, served form, ngram speculation", split=SERVED_FORM,
                extra_args=NGRAM_SPECULATION),
    ]


def scored(examples, texts, eos, seconds, **extra) -> dict:
    """Speed and quality of one variant's answers, overall and protocol-correct per role."""
    from slipcore_nb import evaluate

    report = evaluate.score_outputs(examples, texts, eos)
    table = report.table
    return {"messages_per_second": round(len(texts) / seconds, 3), "seconds": round(seconds, 2),
            "valid": report.rate("valid"), "protocol_correct": report.rate("protocol_correct"),
            "valid_but_wrong": report.rate("valid_but_wrong"),
            "per_role": {role: float(table.loc[role, "protocol_correct"]) for role in table.index if role != "overall"},
            **extra}


def baseline(examples, modelfile: str, budget: int, eos: str) -> dict:
    """Notebook 05's path: llama-cpp-python, one request after another."""
    from slipcore_nb import answering

    answers = answering.answer([ex["input"] for ex in examples], modelfile, runtime="llama.cpp", max_tokens=budget)
    return scored(examples, answers.texts, eos, answers.seconds, runtime="llama-cpp-python, one stream",
                  threads=answering.llama_threads())


def answer_concurrently(base_url: str, examples: list[dict], budget: int, clients: int, *,
                        cache_prompt: bool = True, grammar: str | None = None, fields_of=None) -> tuple[list, float]:
    """Every example through a running server, ``clients`` requests at a time, after one warm-up request.

    ``fields_of(example)`` adds per-request fields (a LoRA choice). Returns the completions and the seconds.
    """
    from slipcore_nb.completions import CompletionsClient
    from slipcore_nb.prompts import PROMPT

    with CompletionsClient(base_url, extra={"cache_prompt": cache_prompt}) as client:
        def ask(example):
            fields = fields_of(example) if fields_of else {}
            return client.complete(PROMPT.prompt(example["input"]), max_tokens=budget, grammar=grammar, **fields)
        client.complete(PROMPT.prompt(examples[0]["input"]), max_tokens=4)  # loads pages; not timed
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(ask, examples))
    return answers, time.perf_counter() - start


def server_run(variant: dict, gguf: str, examples: list[dict], budget: int, eos: str) -> dict:
    """One llama-server for one variant, ``slots`` clients sending the prompts concurrently."""
    from slipcore_nb.grammar import nslip_gbnf
    from slipcore_nb.llama_server import LlamaServer

    grammar = nslip_gbnf() if variant["grammar"] else None
    with LlamaServer(gguf, parallel=variant["slots"], ctx_per_slot=512, extra_args=variant["extra_args"]) as server:
        answers, seconds = answer_concurrently(server.base_url, examples, budget, variant["slots"],
                                               cache_prompt=variant["cache_prompt"], grammar=grammar)
        command = " ".join(server.command())
    return scored(examples, [a.text for a in answers], eos, seconds, runtime="llama-server",
                  threads=usable_cores(), slots=variant["slots"], cache_prompt=variant["cache_prompt"],
                  grammar=variant["grammar"], gguf=Path(gguf).name, split=variant["split"],
                  mean_prompt_tokens=round(sum(a.prompt_tokens for a in answers) / len(answers), 1),
                  mean_answer_tokens=round(sum(a.completion_tokens for a in answers) / len(answers), 1),
                  command=command)


def cpu_bounds(parameters: int, tokens_per_message: float, f16_bytes: int) -> dict:
    """What this CPU could do at best: compute for many streams, memory bandwidth for one."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    start, repeats = time.perf_counter(), 20
    for _ in range(repeats):
        torch.mm(a, b)
    flops = repeats * 2 * 1024**3 / (time.perf_counter() - start)
    weights = torch.ones(2**27)  # 512 MiB, far beyond any cache; read on all cores, as decoding reads weights
    weights.sum()
    start = time.perf_counter()
    for _ in range(5):
        weights.sum()
    bandwidth = 5 * weights.numel() * weights.element_size() / (time.perf_counter() - start)
    flop_per_message = 2 * parameters * tokens_per_message
    return {
        "matmul_gflops_fp32_all_cores": round(flops / 1e9, 1),
        "memory_read_gb_s_all_cores": round(bandwidth / 1e9, 1),
        "flop_per_message": flop_per_message,
        "compute_bound_messages_per_second": round(flops / flop_per_message, 1),
        "f16_bytes_per_token": f16_bytes,
        "one_stream_bound_tokens_per_second": round(bandwidth / f16_bytes, 1),
    }


def markdown(data: dict) -> str:
    rows = [{"variant": label, "msg/s": row["messages_per_second"], "x baseline": row.get("vs_baseline", ""),
             "valid %": row["valid"], "protocol-correct %": row["protocol_correct"],
             "valid but wrong %": row["valid_but_wrong"],
             "tokens in/out": f"{row['mean_prompt_tokens']}/{row['mean_answer_tokens']}" if "mean_prompt_tokens" in row else "-"}
            for label, row in data["variants"].items()]
    bounds = data["bounds"]
    lines = [
        f"Model: {data['model']} ({data['source']}); {data['prompts']} messages of `{data['split']}` (the served-form "
        f"variants: the same messages from `{SERVED_FORM}`), greedy.", "",
        md_table(rows), "",
        f"Baseline {data['baseline_messages_per_second']} msg/s; best {data['best_messages_per_second']} msg/s "
        f"({data['best_variant']}, {data['best_vs_baseline']}x) with protocol-correct "
        f"{data['variants'][data['best_variant']]['protocol_correct']:.1f} % vs "
        f"{data['variants']['baseline']['protocol_correct']:.1f} %: the goal ({GOAL_SPEEDUP:g}x, protocol-correct "
        f"within 1 point) is {'met' if data['goal_met'] else 'not met'}.",
        f"Bounds on this CPU: a fp32 matmul runs at {bounds['matmul_gflops_fp32_all_cores']} GFLOP/s on all cores; "
        f"a message costs {bounds['flop_per_message'] / 1e9:.1f} GFLOP, so at most "
        f"{bounds['compute_bound_messages_per_second']} msg/s (the best variant reaches "
        f"{round(100 * data['best_messages_per_second'] / bounds['compute_bound_messages_per_second'])} % of it). "
        f"One stream reads all f16 weights for every generated token: {bounds['memory_read_gb_s_all_cores']} GB/s "
        f"over {bounds['f16_bytes_per_token'] / 1e6:.0f} MB is at most {bounds['one_stream_bound_tokens_per_second']} "
        f"tokens/s; the 1-slot server generated {data['one_stream_tokens_per_second']} (prompt tokens come "
        f"in batches and cost compute, not bandwidth).",
        "", footer(data)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=count(), help="held-out prompts per variant (default 60; 8 with --quick)")
    parser.add_argument("--slots", type=count(), default=8, help="parallel slots and concurrent clients (default 8)")
    parser.add_argument("--model", type=model_name, help="default smollm2-135m (tiny with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run on the tiny model")
    args = parser.parse_args(argv)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from slipcore_nb import answering, dataset, evaluate

    model = args.model or ("tiny" if args.quick else "smollm2-135m")
    data = header(MODULE)
    served = prepare_served_model(model, work_dir(args.quick), print)
    limit = args.prompts or (8 if args.quick else 60)
    examples = {split: dataset.load_split(split)[:limit] for split in (LONG_FORM, SERVED_FORM)}
    tokenizer = AutoTokenizer.from_pretrained(served["merged"])
    budget = evaluate.answer_budget(tokenizer, examples[LONG_FORM])
    ggufs = {kind: str(answering.read_modelfile(served[kind]).gguf) for kind in ("f16", "q8_0", "q4_k_m")}
    variants = {"baseline": baseline(examples[LONG_FORM], served["f16"], budget, tokenizer.eos_token)}
    print("baseline:", variants["baseline"], flush=True)
    for variant in server_variants(args.slots):
        variants[variant["label"]] = server_run(variant, ggufs[variant["kind"]], examples[variant["split"]], budget,
                                                tokenizer.eos_token)
        print(variant["label"], variants[variant["label"]], flush=True)
    base = variants["baseline"]["messages_per_second"]
    for row in variants.values():
        row["vs_baseline"] = round(row["messages_per_second"] / base, 2)
    best = max((label for label in variants if label != "baseline"), key=lambda k: variants[k]["messages_per_second"])
    parameters = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(served["merged"]).parameters())
    served_tokens = variants[best]["mean_prompt_tokens"] + variants[best]["mean_answer_tokens"]
    one_slot = variants[server_variants(args.slots)[0]["label"]]
    one_stream_tokens = one_slot["mean_answer_tokens"] * one_slot["messages_per_second"]
    quality_kept = variants[best]["protocol_correct"] >= variants["baseline"]["protocol_correct"] - 1
    data.update(model=model, source=served["source"], split=LONG_FORM, prompts=len(examples[LONG_FORM]),
                max_tokens=budget, variants=variants, baseline_messages_per_second=base,
                best_variant=best, best_messages_per_second=variants[best]["messages_per_second"],
                best_vs_baseline=variants[best]["vs_baseline"],
                goal_met=variants[best]["vs_baseline"] >= GOAL_SPEEDUP and quality_kept,
                one_stream_tokens_per_second=round(one_stream_tokens, 1),
                bounds=cpu_bounds(parameters, served_tokens, Path(ggufs["f16"]).stat().st_size),
                architecture=AutoConfig.from_pretrained(served["merged"]).model_type)
    finish(data)
    write_results(results_dir(args.quick), "serving", data, markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
