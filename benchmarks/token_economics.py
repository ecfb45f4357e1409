"""Token economics: what one nSLIP message costs next to the same message as compact and verbose JSON.

    python -m benchmarks.token_economics [--quick]

Every message of the dataset (the targets of train + eval: each conversation turn once) is rendered
by :func:`slipcore_nb.economics.renderings` and counted with real tokenizers: SmolLM2's, the tiny
model's, and every other tokenizer a package in this environment ships offline (found by searching
site-packages; nothing is downloaded). Characters are counted the same way, with a one-id-per-character
"tokenizer". Writes ``results/token_economics.{json,md}``.
"""

from __future__ import annotations

import argparse
import site
import sys
import time
from pathlib import Path

from .common import finish, footer, header, md_table, results_dir, write_results

MODULE = "benchmarks.token_economics"
CLAIM = 63.0  # the protocol README: "63 % fewer tokens than JSON"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "*.tiktoken", "*.gguf")


class CharTokenizer:
    """One id per character, so :func:`economics.token_counts` counts characters."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(ch) for ch in text]}


class LlamaCppTokenizer:
    """A GGUF's own tokenizer as llama.cpp runs it (what Ollama counts), behind the HF call signature."""

    def __init__(self, gguf: Path):
        from slipcore_nb.gguf_vocab import GGUFVocab

        self.vocab = GGUFVocab(gguf)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.vocab.tokenize(text, add_bos=add_special_tokens, special=False)}


class HFFileTokenizer:
    """A bare ``tokenizer.json`` (tokenizers library) behind the HF call signature."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.tok.encode(text, add_special_tokens=add_special_tokens).ids}


def shipped_tokenizer_files() -> list[Path]:
    """Tokenizer files inside installed packages (site-packages of this interpreter)."""
    roots = {Path(p) for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()}
    found = set()
    for root in roots:
        for pattern in TOKENIZER_FILES:
            found.update(p for p in root.rglob(pattern) if p.is_file())
    return sorted(found)


def tokenizers() -> tuple[dict, list[dict]]:
    """name -> tokenizer, plus what the search of site-packages found and what became of each file."""
    from slipcore_nb import loading

    chosen = {"SmolLM2-135M (HF tokenizer)": loading.load_tokenizer("smollm2-135m"),
              "tiny (SentencePiece on our corpus)": loading.load_tokenizer("tiny")}
    searched = []
    for path in shipped_tokenizer_files():
        entry = {"file": str(path), "package": path.relative_to(_site_root(path)).parts[0]}
        try:
            if path.suffix == ".gguf":
                name = f"{path.name} via llama.cpp ({entry['package']})"
                chosen[name] = LlamaCppTokenizer(path)
            elif path.name == "tokenizer.json":
                name = f"{entry['package']} tokenizer.json"
                chosen[name] = HFFileTokenizer(path)
            else:
                entry["used"] = False
                entry["why"] = "format not loaded by this benchmark"
                searched.append(entry)
                continue
            entry["used"], entry["as"] = True, name
        except Exception as error:  # a file that does not load is reported, not fatal
            entry["used"], entry["why"] = False, f"{type(error).__name__}: {error}"
        searched.append(entry)
    return chosen, searched


def _site_root(path: Path) -> Path:
    for parent in path.parents:
        if parent.name in ("site-packages", "dist-packages"):
            return parent
    return path.parent


def verdict(saving: float) -> str:
    if saving >= CLAIM - 0.5:
        return "holds"
    if saving >= CLAIM - 5:
        return "roughly holds"
    return "does not hold"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.token_economics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="first 200 messages only (smoke run)")
    args = parser.parse_args(argv)

    from slipcore_nb import dataset, economics
    from slipcore_nb.protocol import decode

    start = time.perf_counter()
    messages = dataset.load_split("train") + dataset.load_split("eval")
    if args.quick:
        messages = messages[:200]
    data = header(MODULE)
    chosen, searched = tokenizers()
    data.update(messages=len(messages), shapes=list(economics.SHAPES), tokenizer_search=searched,
                claim_percent=CLAIM, tokenizers={})
    data["example"] = economics.renderings(decode(messages[1]["target"]))

    md = ["### Token economics: nSLIP vs JSON", "",
          f"Every message of the dataset ({len(messages)}: train + eval targets) in three shapes "
          "(`slipcore_nb.economics.renderings`): nSLIP, compact JSON (one line, names spelled out) and "
          "verbose JSON (header/slots, indent 2). Mean tokens per message and the % nSLIP saves.", ""]
    overall_rows = []
    for name, tok in [*chosen.items(), ("characters", CharTokenizer())]:
        counts = economics.token_counts(tok, messages)
        table = economics.savings_table(counts)
        data["tokenizers"][name] = {role: {k: round(float(v), 2) for k, v in row.items()}
                                    for role, row in table.iterrows()}
        overall = table.loc["overall"]
        overall_rows.append({"tokenizer": name, **{col: float(overall[col]) for col in table.columns}})
        unit = "chars" if name == "characters" else "tokens"
        md += [f"**{name}**", "",
               md_table([{"message type": role, **{c.replace("tokens", unit): float(v) for c, v in row.items()}}
                         for role, row in table.iterrows()]), ""]

    real = [row for row in overall_rows if row["tokenizer"] != "characters"]
    lines = []
    for row in real:
        c, v = row["saved vs compact %"], row["saved vs verbose %"]
        lines.append(f"- {row['tokenizer']}: {c:.1f} % fewer tokens than compact JSON ({verdict(c)}), "
                     f"{v:.1f} % fewer than verbose JSON ({verdict(v)}).")
    data["claim_check"] = {row["tokenizer"]: {"vs_compact": verdict(row["saved vs compact %"]),
                                              "vs_verbose": verdict(row["saved vs verbose %"])} for row in real}
    smol = next(row for row in real if row["tokenizer"].startswith("SmolLM2"))
    summary = (f"**The claim \"63 % fewer tokens than JSON\"**: with SmolLM2's tokenizer nSLIP saves "
               f"{smol['saved vs compact %']:.1f} % against compact JSON "
               f"(claim {verdict(smol['saved vs compact %'])}) and {smol['saved vs verbose %']:.1f} % against "
               f"verbose JSON (claim {verdict(smol['saved vs verbose %'])}).")
    others = [s for s in searched if s.get("used")]
    note = ("The tiny model's tokenizer was trained on this corpus with every wire prefix as its own symbol, "
            "so it flatters nSLIP; SmolLM2's is the honest general-purpose number. ")
    for entry in others:
        same = next(r for r in real if r["tokenizer"] == entry["as"])
        identical = all(abs(same[k] - smol[k]) < 1e-9 for k in same if k != "tokenizer")
        note += (f"Searching site-packages for tokenizer files found `{Path(entry['file']).name}` "
                 f"(package {entry['package']})" + (": SmolLM2's own vocabulary run by llama.cpp (what Ollama "
                 "counts), with identical counts. " if identical else ". "))
    if not others:
        note += "No other tokenizer ships inside an installed package here. "
    note += "No tokenizer was downloaded."
    head = md[:4]
    md = head + [summary, "", *lines, "", note, "",
                 "**Overall, mean per message**", "", md_table(overall_rows), ""] + md[4:]
    data["seconds"] = round(time.perf_counter() - start, 1)
    finish(data)
    md.append(footer(data))
    write_results(results_dir(args.quick), "token_economics", data, "\n".join(md))
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
