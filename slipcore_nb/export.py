"""From a trained LoRA to files Ollama and llama.cpp load: adapter, merged 16-bit folder, GGUF.

GGUF is written by llama.cpp's own converter (``convert_hf_to_gguf.py``), the copy vendored in the
``llama-cpp-python`` sdist of the *installed* version, so the converter and the runtime that loads
its output are the same llama.cpp commit (PyPI's ``gguf`` package lags behind). Fetching it is
:mod:`slipcore_nb.llama_cpp_build`'s job (``python -m slipcore_nb.llama_cpp_build --fetch-converter``,
or a llama.cpp checkout named by ``LLAMA_CPP_DIR``); this module runs it. Nothing here touches GitHub
or the HF hub, and Unsloth's ``save_pretrained_gguf`` is never called (it runs ``apt-get`` and ``git clone``).

The Modelfile that points Ollama at these files is :mod:`slipcore_nb.modelfile`'s.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import llama_cpp_build, whole_files
from .llama_cpp_build import LlamaCppError
from .machine import usable_cores
from .native import NativeCrash, run_in_child
from .prompts import PROMPT

# Our names -> the label in the file name. f16 and q8_0 come straight from the converter; K-quants
# need llama.cpp's quantizer, which works from the f16 file.
GGUF_TYPES = {"f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K_M"}


class ExportError(RuntimeError):
    """A piece the export needs is missing or failed; the message says which and what to do."""


@dataclass(frozen=True)
class Artifact:
    """One file or folder written by the export, with its size and how long it took."""

    kind: str
    path: Path
    seconds: float

    @property
    def size_bytes(self) -> int:
        if self.path.is_dir():
            return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return self.path.stat().st_size

    def row(self) -> dict:
        """A table row for the notebook: kind, file, MB, seconds."""
        return {"kind": self.kind, "file": self.path.name, "MB": round(self.size_bytes / 2**20, 2),
                "seconds": round(self.seconds, 1)}


# ---------------------------------------------------------------------------- running the llama.cpp converter


@contextlib.contextmanager
def _as_export_error():
    """llama.cpp's source missing (:class:`LlamaCppError`) is an :class:`ExportError` here, like every other
    step of the export that cannot run, so a caller catches one error."""
    try:
        yield
    except LlamaCppError as error:
        raise ExportError(str(error)) from None


def converter_command(script: str, *args: str) -> list[str]:
    """The command line that runs one of llama.cpp's converter scripts, as a user would type it."""
    with _as_export_error():
        return [sys.executable, str(llama_cpp_build.find_converter() / script), *args]


def converter_env() -> dict[str, str]:
    """The converter's environment: its own gguf-py (newer than PyPI's ``gguf``), and offline."""
    with _as_export_error():
        converter = llama_cpp_build.find_converter()
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                PYTHONPATH=os.pathsep.join([str(converter / "gguf-py"), str(converter)]))


def _run_converter(command: list[str], log: Path) -> None:
    """Run a :func:`converter_command`; keep its log beside the output and quote its last line on failure."""
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=converter_env())
    if done.returncode != 0:
        last = [line for line in log.read_text().splitlines() if line.strip()][-1:] or ["no output"]
        raise ExportError(f"{Path(command[1]).name} failed (exit {done.returncode}): {last[0]} (full log: {log}).")


# ---------------------------------------------------------------------------- adapter and merge


def _save_tokenizer(tokenizer, folder: Path) -> None:
    """Save the tokenizer and keep a SentencePiece ``tokenizer.model``, which the GGUF converter reads.

    transformers 5 writes only ``tokenizer.json`` for Llama tokenizers; without the raw model the
    converter falls back to BPE and rejects our tokenizer. Only a real SentencePiece model is
    copied: a BPE tokenizer's ``vocab_file`` is ``vocab.json`` (Qwen2), and under the name
    ``tokenizer.model`` the converter would try to read it as SentencePiece. A ``tokenizer.model`` left in
    the folder by an earlier run (another model, or data that trained another tiny tokenizer) is
    removed first: beside a new ``tokenizer.json`` it would give the GGUF other token ids than training.
    """
    vocab_file = getattr(tokenizer, "vocab_file", None)
    sentencepiece_model = Path(vocab_file).read_bytes() if vocab_file and _is_sentencepiece(vocab_file) else None
    (folder / "tokenizer.model").unlink(missing_ok=True)
    tokenizer.save_pretrained(folder)
    if sentencepiece_model is not None and not (folder / "tokenizer.model").exists():
        (folder / "tokenizer.model").write_bytes(sentencepiece_model)


def _is_sentencepiece(path: str | Path) -> bool:
    import sentencepiece

    if not Path(path).is_file():
        return False
    try:
        sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError):
        return False
    return True


def save_adapter(model, tokenizer, out_dir: str | Path) -> Artifact:
    """The LoRA adapter (``adapter_config.json`` + safetensors) and tokenizer: small, reloadable with peft."""
    start, out = time.perf_counter(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    if not (out / "adapter_config.json").exists():
        raise ExportError(f"{out} has no adapter_config.json: save_adapter needs a peft (LoRA) model.")
    return Artifact("adapter", out, time.perf_counter() - start)


def merge_to_16bit(model, tokenizer, out_dir: str | Path, dtype: str = "bfloat16",
                   base_dir: str | Path | None = None) -> Artifact:
    """LoRA folded into the base weights, saved as a plain 16-bit HF folder (the converter's input).

    Unsloth models use their own ``save_pretrained_merged``, which reads the 16-bit base shard by
    shard (a 4-bit model cannot be merged exactly) from ``base_dir`` (:func:`weights.base_folder`: a
    local folder, so nothing is downloaded behind the notebook's back); a plain peft model is merged
    on a copy, so the model in the notebook keeps its adapter. bfloat16 keeps fp32's range.
    """
    import torch

    start, out = time.perf_counter(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained_merged"):
        with _merge_base(model, base_dir):
            model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
    else:
        if not hasattr(model, "merge_and_unload"):
            raise ExportError("merge_to_16bit needs a peft (LoRA) model; for a plain model use save_pretrained.")
        merged = copy.deepcopy(model).merge_and_unload()
        merged.to(getattr(torch, dtype)).save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    return Artifact("merged_16bit", out, time.perf_counter() - start)


@contextlib.contextmanager
def _merge_base(model, base_dir: str | Path | None):
    """Point Unsloth's merge at a local base folder: it reads the base from ``config._name_or_path``,
    which for a 4-bit hub model is the 4-bit repository (Unsloth would then look up and download the
    16-bit one itself)."""
    config = model.config
    original = config._name_or_path
    if base_dir is not None:
        config._name_or_path = str(Path(base_dir).resolve())
    try:
        yield
    finally:
        config._name_or_path = original


# ---------------------------------------------------------------------------- GGUF


def to_gguf(model_dir: str | Path, out_dir: str | Path, types: tuple[str, ...] = ("f16", "q8_0", "q4_k_m"),
            name: str = "slipcore", work_dir: str | Path | None = None) -> dict[str, Artifact]:
    """GGUF files of an HF folder (e.g. the merged one): ``{name}-F16.gguf``, ``-Q8_0``, ``-Q4_K_M``.

    f16 and q8_0 come from the converter; q4_k_m is llama.cpp's quantizer run on the f16 file,
    which, when f16 itself is not asked for, is written to ``work_dir`` (default ``out_dir``).
    """
    model_dir, out = Path(model_dir), Path(out_dir)
    whole_files.file_name(name, "name")
    if isinstance(types, str):
        raise ExportError(f"types must be a tuple of GGUF types such as ('f16',), got the string {types!r}")
    unknown = [t for t in types if not isinstance(t, str) or t.lower() not in GGUF_TYPES]
    if unknown:
        raise ExportError(f"unknown GGUF type(s) {unknown}: choose from {list(GGUF_TYPES)}.")
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"no merged model at {model_dir} (config.json missing): run merge_to_16bit first.")
    wanted = [t.lower() for t in types]
    made: dict[str, Artifact] = {}
    for outtype in ("f16", "q8_0"):
        if outtype in wanted or (outtype == "f16" and "q4_k_m" in wanted):
            folder = out if outtype in wanted else Path(work_dir or out)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}-{GGUF_TYPES[outtype]}.gguf"
            start = time.perf_counter()
            _run_converter(converter_command("convert_hf_to_gguf.py", str(model_dir), "--outtype", outtype,
                                             "--outfile", str(path)), folder / f"{path.stem}.log")
            made[outtype] = Artifact(f"gguf {outtype}", path, time.perf_counter() - start)
    check_tokenizer(next(iter(made.values())).path, model_dir)
    if "q4_k_m" in wanted:
        made["q4_k_m"] = quantize(made["f16"].path, out / f"{name}-Q4_K_M.gguf")
    return {t: made[t] for t in wanted}


# A prompt as training renders it, with every character class a message uses.
_TOKENIZER_PROBE = PROMPT.training_text(
    "You are the planner agent (id 2). Goal[Nj]: Add rate limiting -- caf\u00e9, \u65e5\u672c, \u201cquotes\u201d.",
    '@a4|f1|cvC|S2|dK|T2|gNj|ke|q3|t"plan \\"v1\\" |#"#', "")


def check_tokenizer(gguf_path: str | Path, model_dir: str | Path) -> None:
    """Fail unless llama.cpp splits a training prompt into the same token ids as the HF tokenizer.

    A converter that misreads a tokenizer (e.g. a byte-level BPE taken for SentencePiece) yields a
    GGUF that loads but sees other tokens than training did, or aborts the process on a newline;
    the comparison runs in a child process so such an abort becomes this error, not a dead kernel.
    """
    try:
        ours, theirs, kind = run_in_child(_token_ids_both_ways, str(gguf_path), str(model_dir), _TOKENIZER_PROBE,
                                          what=f"llama.cpp tokenizing a training prompt with {Path(gguf_path).name}")
    except NativeCrash as crash:
        why = f"llama.cpp crashed tokenizing a training prompt ({crash})"
    else:
        if ours == theirs:
            return
        why = f"llama.cpp ({kind} tokenizer) and the HF tokenizer disagree on a training prompt"
    raise ExportError(f"{why}, so {gguf_path} would not see what training saw: fix the tokenizer files in "
                      f"{model_dir} (a tokenizer.model for SentencePiece, a byte-level tokenizer.json for BPE).")


def _token_ids_both_ways(gguf: str, folder: str, text: str) -> tuple[list[int], list[int], str]:
    from transformers import AutoTokenizer

    from .gguf_vocab import GGUFVocab

    with GGUFVocab(gguf) as vocab:
        ours = vocab.tokenize(text, add_bos=True, special=True)
        return ours, AutoTokenizer.from_pretrained(folder)(text).input_ids, vocab.metadata("tokenizer.ggml.model")


def quantize(f16_gguf: str | Path, out_path: str | Path, ftype: str = "Q4_K_M", verbose: bool = False) -> Artifact:
    """llama.cpp's quantizer (``llama_model_quantize``) through llama-cpp-python, in a child process.

    llama.cpp logs a line per tensor; unless ``verbose``, only its errors reach the notebook.
    """
    if not Path(f16_gguf).is_file():
        raise ExportError(f"no GGUF file at {f16_gguf} to quantize: run to_gguf first.")
    with _as_export_error():
        llama_cpp_build.installed_version()  # the install hint when the package is missing
    start = time.perf_counter()
    status = run_in_child(_quantize_file, str(f16_gguf), str(out_path), ftype, verbose,
                          what=f"llama.cpp quantizing {Path(f16_gguf).name} to {ftype}")
    if status is None:
        raise ExportError(f"llama.cpp has no quantization type {ftype!r}: try Q4_K_M, Q5_K_M or Q6_K.")
    if status != 0:
        raise ExportError(f"llama.cpp could not quantize {f16_gguf} to {ftype} (status {status}): "
                          "check that it is an f16/f32 GGUF file.")
    return Artifact(f"gguf {ftype.lower()}", Path(out_path), time.perf_counter() - start)


def _quantize_file(source: str, target: str, ftype: str, verbose: bool) -> int | None:
    """llama_model_quantize's status, or None when llama.cpp has no such type."""
    import llama_cpp

    code = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}", None)
    if code is None:
        return None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = code
    params.nthread = usable_cores()
    # llama-cpp-python forwards llama.cpp's log through this logger
    logging.getLogger("llama-cpp-python").setLevel(logging.INFO if verbose else logging.ERROR)
    return llama_cpp.llama_model_quantize(source.encode(), target.encode(), params)


def adapter_to_gguf(adapter_dir: str | Path, base_dir: str | Path, out_dir: str | Path,
                    name: str = "slipcore") -> Artifact:
    """The LoRA adapter alone as a GGUF LoRA (``{name}-lora-F16.gguf``) for Ollama's ``ADAPTER`` line.

    Only LoRA matrices fit in a GGUF adapter: an adapter that also trains whole layers
    (peft ``modules_to_save``, e.g. the tiny model's embeddings) must be served merged instead.
    """
    adapter_dir, base_dir, out = Path(adapter_dir), Path(base_dir), Path(out_dir)
    whole_files.file_name(name, "name")
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ExportError(f"no LoRA adapter at {adapter_dir} (adapter_config.json missing): run save_adapter first.")
    if not (base_dir / "config.json").is_file():
        raise ExportError(f"no base model at {base_dir} (config.json missing): pass the HF folder the LoRA was trained on.")
    trained_whole = json.loads(config_file.read_text()).get("modules_to_save") or []
    if trained_whole:
        raise ExportError(f"the adapter also trains whole layers {trained_whole} (modules_to_save), which a GGUF "
                          "LoRA cannot hold: serve the merged GGUF (to_gguf) instead.")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-lora-F16.gguf"
    start = time.perf_counter()
    _run_converter(converter_command("convert_lora_to_gguf.py", str(adapter_dir), "--base", str(base_dir),
                                     "--outtype", "f16", "--outfile", str(path)), out / f"{path.stem}.log")
    return Artifact("gguf lora", path, time.perf_counter() - start)


def tensor_type_counts(gguf_path: str | Path) -> dict[str, int]:
    """How many tensors of each type (F16, Q8_0, Q4_K, Q6_K, ...) a GGUF file holds, via the vendored reader."""
    if not Path(gguf_path).is_file():
        raise ExportError(f"no GGUF file at {gguf_path}: run to_gguf first.")
    with _as_export_error():
        converter = llama_cpp_build.find_converter()
    code = ("import collections, json, sys; from gguf import GGUFReader; "
            "r = GGUFReader(sys.argv[1]); "
            "print(json.dumps(collections.Counter(t.tensor_type.name for t in r.tensors)))")
    done = subprocess.run([sys.executable, "-c", code, str(gguf_path)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(converter / "gguf-py")))
    if done.returncode != 0:
        raise ExportError(f"could not read {gguf_path} as GGUF: {done.stderr.strip().splitlines()[-1:]}.")
    return json.loads(done.stdout)


def eos_token(gguf_path: str | Path) -> str:
    """The EOS token's text as llama.cpp reads it from the GGUF (what Ollama's stop list must hold)."""
    if not Path(gguf_path).is_file():
        raise ExportError(f"no GGUF file at {gguf_path}: run to_gguf first.")
    return run_in_child(_eos_text, str(gguf_path), what=f"llama.cpp reading the vocabulary of {Path(gguf_path).name}")


def _eos_text(gguf: str) -> str:
    from .gguf_vocab import GGUFVocab

    with GGUFVocab(gguf) as vocab:
        return vocab.token_text(vocab.eos)
