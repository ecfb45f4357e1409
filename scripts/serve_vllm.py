#!/usr/bin/env python
"""Serve the finetuned model with vLLM, nSLIP enforced by its grammar engine (not run here: vLLM needs CUDA).

    python scripts/serve_vllm.py                 # print the `vllm serve` command and write the grammar
    python scripts/serve_vllm.py --check URL     # one request through the agents' client, decoded

Two ways to serve, from what notebooks 03-04 wrote:
- the merged 16-bit folder (``outputs/merged``): one model, no adapter at request time;
- the base with the LoRA adapter (``outputs/lora``) under ``--enable-lora``: the request's ``model``
  field picks the adapter, so one base serves several role adapters (``--lora name=path`` repeated).
The grammar is :func:`slipcore_nb.grammar.nslip_gbnf` (generated from the protocol tables), written
to ``outputs/nslip.gbnf`` and sent with each request as ``structured_outputs.grammar``, which vLLM
enforces with xgrammar; the test suite checks xgrammar's verdicts on it against llama.cpp's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from slipcore_nb.arguments import name_and_path, port, url  # noqa: E402 - after the path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--merged", action="store_true", help="serve outputs/merged instead of base + adapter")
    parser.add_argument("--lora", action="append", default=[], type=name_and_path, metavar="NAME=PATH",
                        help="adapters to serve beside the base (default: nslip=outputs/lora)")
    parser.add_argument("--port", type=port, default=8000)
    parser.add_argument("--check", type=url, metavar="URL", help="send one prompt to a running server at URL and decode it")
    parser.add_argument("--model", default="nslip", help="with --check: the served name to ask (an adapter's, or base)")
    return parser.parse_args(argv)


def serve_command(base: str, loras: dict[str, str], port: int, max_lora_rank: int) -> list[str]:
    """``vllm serve`` for ``base`` with ``loras`` (name -> folder) on ``port``."""
    command = ["vllm", "serve", base, "--host", "127.0.0.1", "--port", str(port), "--dtype", "auto",
               "--max-model-len", "1024", "--served-model-name", "base"]
    if loras:
        command += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", str(len(loras)),
                    "--lora-modules", *(f"{name}={path}" for name, path in loras.items())]
    return command


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from slipcore_nb import artifacts, registry, weights
    from slipcore_nb.completions import CompletionsClient
    from slipcore_nb.conversations import GUIDE_PROMPT
    from slipcore_nb.grammar import write_gbnf
    from slipcore_nb.prompts import PROMPT
    from slipcore_nb.protocol import decode

    grammar = write_gbnf(artifacts.output_dir() / "nslip.gbnf")
    if args.check:
        with CompletionsClient(args.check, model=args.model, server="vllm") as client:
            answer = client.complete(PROMPT.prompt(GUIDE_PROMPT), grammar=grammar.read_text())
        print(answer.text, "->", decode(answer.text))
        return 0
    record = artifacts.path("model.json")
    spec = registry.get_spec(json.loads(record.read_text())["name"]) if record.exists() else None
    if args.merged:
        base, loras = str(artifacts.path("merged")), {}
    elif spec is None:
        raise SystemExit("no outputs/model.json: run notebooks 01-03 or scripts/train.py first.")
    else:
        # vLLM puts LoRA on a 16-bit base: the hub id the adapter was trained on, its 16-bit twin for a 4-bit one.
        base = spec.merge_base or (spec.source if "/" in spec.source else str(weights.model_path(spec)))
        loras = dict(args.lora) or {"nslip": str(artifacts.path("lora"))}
    rank = max(spec.lora_rank if spec else 16, 16)  # vLLM accepts 8, 16, 32, 64...; 16 covers the defaults
    print("# on a CUDA machine with `pip install vllm` (not run in this project's CI: no GPU there)")
    print(shlex.join(serve_command(base, loras, args.port, rank)))
    print(f"# grammar for structured_outputs.grammar: {grammar}")
    print(f"# then point the agents at it: CompletionsClient('http://127.0.0.1:{args.port}', "
          f"model='{next(iter(loras), 'base')}', server='vllm')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
