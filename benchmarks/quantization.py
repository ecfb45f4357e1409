"""The smallest GGUF that keeps the protocol: llama.cpp's file types of one model, side by side.

    python -m benchmarks.quantization [--model smollm2-135m] [--prompts N] [--quick]

From the f16 GGUF of the model notebooks 03-04 exported (else the one benchmarks.speed builds),
llama.cpp's quantizer writes each type of :data:`TYPES`; llama-server answers the same held-out
messages with each (the headline split, greedy, 16 slots) and they are scored like notebook 05. The
recommendation is the smallest file whose protocol-correct rate is within :data:`TOLERANCE` points of
f16. K-quants work on rows of 256 values: where a model's width is not a multiple of 256 (SmolLM2-135M:
576) llama.cpp gives those tensors a fallback type, which the table's tensor column shows.
Results: ``benchmarks/results/quantization.json`` and ``quantization.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slipcore_nb.arguments import count, model_name

from .common import finish, footer, header, md_table, results_dir, work_dir, write_results
from .serving import LONG_FORM, server_run, server_variant
from .speed import prepare_served_model

MODULE = "benchmarks.quantization"
TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
TOLERANCE = 2.0  # protocol-correct points a smaller file may lose against f16
SLOTS = 16


def quantized_files(f16_gguf: Path, out_dir: Path) -> dict[str, Path]:
    """Every type of :data:`TYPES` as a file (F16 is the export itself), quantized once and kept."""
    from slipcore_nb import export

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"F16": f16_gguf}
    for ftype in TYPES[1:]:
        path = out_dir / f"slipcore-{ftype}.gguf"
        if not path.is_file() or path.stat().st_mtime < f16_gguf.stat().st_mtime:
            export.quantize(f16_gguf, path, ftype)
        files[ftype] = path
    return files


def recommend(rows: dict[str, dict], tolerance: float = TOLERANCE) -> str:
    """The smallest file within ``tolerance`` protocol-correct points of F16 (F16 itself if none is)."""
    floor = rows["F16"]["protocol_correct"] - tolerance
    keeps = [ftype for ftype, row in rows.items() if row["protocol_correct"] >= floor]
    return min(keeps, key=lambda ftype: rows[ftype]["megabytes"])


def markdown(data: dict) -> str:
    table = [{"file": ftype, "MB": row["megabytes"],
              "tensor types": ", ".join(f"{kind} {count}" for kind, count in row["tensors"].items()),
              "valid %": row["valid"], "protocol-correct %": row["protocol_correct"],
              "valid but wrong %": row["valid_but_wrong"], "msg/s": row["messages_per_second"]}
             for ftype, row in data["files"].items()]
    width = data["hidden_size"]
    lines = [
        f"Model: {data['model']} ({data['source']}); {data['prompts']} messages of `{data['split']}`, greedy, "
        f"llama-server with {SLOTS} slots.", "", md_table(table), "",
        f"Smallest file within {TOLERANCE:g} points of f16 on protocol-correct: **{data['recommended']}**. "
        f"Width {width}: {'a' if width % 256 == 0 else 'not a'} multiple of 256, so K-quants "
        f"{'apply to every matrix' if width % 256 == 0 else 'fall back to other types in the tensors of that width'}.",
        "", footer(data)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=model_name, help="default smollm2-135m (tiny with --quick)")
    parser.add_argument("--prompts", type=count(), help="held-out messages per file (default all; 8 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run on the tiny model")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from slipcore_nb import answering, dataset, evaluate, export

    model = args.model or ("tiny" if args.quick else "smollm2-135m")
    data = header(MODULE)
    served = prepare_served_model(model, work_dir(args.quick), print)
    examples = dataset.load_split(LONG_FORM)[: args.prompts or (8 if args.quick else None)]
    tokenizer = AutoTokenizer.from_pretrained(served["merged"])
    budget = evaluate.answer_budget(tokenizer, examples)
    f16 = answering.read_modelfile(served["f16"]).gguf
    files = quantized_files(f16, work_dir(args.quick) / "quantization" / model.replace("/", "--"))
    rows = {}
    for ftype, path in files.items():
        row = server_run(server_variant(ftype, SLOTS), str(path), examples, budget, tokenizer.eos_token)
        rows[ftype] = {"megabytes": round(path.stat().st_size / 1e6, 1), "tensors": export.tensor_type_counts(path),
                       **row}
        print(ftype, rows[ftype], flush=True)
    config = json.loads((Path(served["merged"]) / "config.json").read_text())
    data.update(model=model, source=served["source"], split=LONG_FORM, prompts=len(examples), max_tokens=budget,
                hidden_size=config["hidden_size"], tolerance_points=TOLERANCE, files=rows,
                recommended=recommend(rows))
    finish(data)
    write_results(results_dir(args.quick), "quantization", data, markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
