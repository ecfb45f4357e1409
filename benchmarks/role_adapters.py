"""Role adapters vs one shared adapter, at the same training compute, served from one base.

    python -m benchmarks.role_adapters [--model smollm2-135m] [--prompts N]

The shared adapter is the one notebooks 03-04 trained and exported (``max_steps`` steps on every
role). Each role adapter trains ``max_steps / 4`` steps on its own role's examples, with the same
rank, learning rate and batch: four adapters cost what the shared one cost. One llama-server holds
the base f16 GGUF and all five LoRA GGUFs (loaded at scale 0); every request switches on one
(``slipcore_nb.role_adapters.request_fields``; prompt cache off, see there), the role adapters
chosen by the message's role. The same held-out messages (headline split, greedy) are scored per
role; the merged f16 file of the export is the reference the shared LoRA must match. The Ollama Modelfiles (``ADAPTER`` per role)
are written next to the GGUFs. Results: ``benchmarks/results/role_adapters.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from slipcore_nb.arguments import count, model_name

from .common import finish, footer, header, md_table, results_dir, work_dir, write_results
from .serving import LONG_FORM, answer_concurrently, scored

MODULE = "benchmarks.role_adapters"
SLOTS = 16


def exported_shared(model: str) -> dict:
    """The notebooks' export of ``model``: its LoRA GGUF and merged f16 GGUF, with the run's settings."""
    from slipcore_nb import artifacts

    exported = artifacts.load_json("export.json") if artifacts.path("export.json").is_file() else {}
    metrics = artifacts.load_json("train_metrics.json") if artifacts.path("train_metrics.json").is_file() else {}
    lora_gguf = artifacts.path("gguf") / "slipcore-lora-F16.gguf"
    if exported.get("model") != model or not lora_gguf.is_file() or metrics.get("model") != model:
        raise SystemExit(f"no export of {model} with a LoRA GGUF in {artifacts.output_dir()}: run notebooks "
                         "01-04 on it first (SLIPCORE_MODEL picks the model).")
    return {"lora_gguf": lora_gguf, "merged_f16": Path(exported["f16"]["gguf"]),
            "steps": metrics["steps"], "rank": metrics["rank"], "minutes": metrics["minutes"]}


def markdown(data: dict) -> str:
    from slipcore_nb.conversations import ROLES

    rows = [{"served as": label, "adapters on disk (MB)": row["adapter_megabytes"], "msg/s": row["messages_per_second"],
             "valid %": row["valid"], "protocol-correct %": row["protocol_correct"],
             **{f"{role} %": row["per_role"].get(role, "") for role in ROLES}}
            for label, row in data["variants"].items()]
    lines = [
        f"Model: {data['model']}; {data['prompts']} messages of `{data['split']}`, greedy; llama-server with "
        f"{SLOTS} slots. Shared: {data['shared_steps']} steps on all roles ({data['shared_minutes']} min). "
        f"Role adapters: {data['role_steps']} steps each on its role, rank {data['rank']} "
        f"({data['role_minutes']} min for the four). Columns per role: protocol-correct.", "",
        md_table(rows), "", footer(data)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=model_name, default="smollm2-135m")
    parser.add_argument("--prompts", type=count(), help="held-out messages (default all)")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from slipcore_nb import dataset, evaluate, export, registry, role_adapters, weights
    from slipcore_nb.conversations import ROLES
    from slipcore_nb.llama_server import LlamaServer

    data = header(MODULE)
    shared = exported_shared(args.model)
    spec = registry.get_spec(args.model)
    base = weights.base_folder(spec)
    work = work_dir(False) / "role-adapters" / args.model.replace("/", "--")
    train, examples = dataset.load_split("train"), dataset.load_split(LONG_FORM)[: args.prompts]
    role_steps = max(1, shared["steps"] // len(ROLES))
    lora_ggufs, minutes = {"shared": shared["lora_gguf"]}, 0.0
    for role in ROLES:
        adapter, result = role_adapters.train(args.model, train, role, work, role_steps, shared["rank"])
        minutes += result.seconds / 60
        lora_ggufs[role] = export.adapter_to_gguf(adapter, base, work / "gguf", name=role).path
        print(f"{role}: {result.steps} steps in {result.seconds / 60:.1f} min -> {lora_ggufs[role]}", flush=True)
    base_gguf = export.to_gguf(base, work / "gguf", types=("f16",), name="base")["f16"].path
    role_adapters.write_modelfiles(base_gguf, lora_ggufs, work / "ollama")
    tokenizer = AutoTokenizer.from_pretrained(base)
    budget, eos = evaluate.answer_budget(tokenizer, examples), tokenizer.eos_token
    names = list(lora_ggufs)
    megabytes = {name: round(Path(path).stat().st_size / 1e6, 1) for name, path in lora_ggufs.items()}
    variants = {}
    with LlamaServer(shared["merged_f16"], parallel=SLOTS) as server:
        answers, seconds = answer_concurrently(server.base_url, examples, budget, SLOTS)
    variants["shared adapter merged into f16 (the export)"] = scored(
        examples, [a.text for a in answers], eos, seconds, adapter_megabytes=0.0)
    with LlamaServer(base_gguf, parallel=SLOTS, loras=tuple(lora_ggufs[name] for name in names)) as server:
        for label, fields_of, size in (
                ("base + shared LoRA per request", lambda ex: role_adapters.request_fields(names, "shared"),
                 megabytes["shared"]),
                ("base + role LoRA per request", lambda ex: role_adapters.request_fields(names, ex["role"]),
                 sum(megabytes[role] for role in ROLES))):
            answers, seconds = answer_concurrently(server.base_url, examples, budget, SLOTS, fields_of=fields_of)
            variants[label] = scored(examples, [a.text for a in answers], eos, seconds, adapter_megabytes=size)
            print(label, variants[label], flush=True)
    data.update(model=args.model, split=LONG_FORM, prompts=len(examples), max_tokens=budget,
                shared_steps=shared["steps"], shared_minutes=shared["minutes"], role_steps=role_steps,
                rank=shared["rank"], role_minutes=round(minutes, 1), adapter_megabytes=megabytes,
                base_gguf_megabytes=round(base_gguf.stat().st_size / 1e6, 1), threads=os.cpu_count(),
                variants=variants)
    finish(data)
    write_results(results_dir(False), "role_adapters", data, markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
