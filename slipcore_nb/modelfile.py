"""The Ollama Modelfile: written from :data:`~slipcore_nb.prompts.PROMPT`, read back as Ollama reads it.

The ``TEMPLATE`` and ``stop`` lines are rendered from the same prompt format the model was trained
with, and :func:`parse_modelfile` reads a Modelfile the way Ollama's parser does, so tests and the
llama.cpp fallback in :mod:`slipcore_nb.answering` use exactly what Ollama would.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from . import whole_files
from .export import ExportError, eos_token
from .prompts import PROMPT


@dataclass(frozen=True)
class OllamaRecipe:
    """The Modelfile on disk and the two commands a user types to create and try the model."""

    modelfile: Path
    model_name: str
    create_command: str
    run_command: str


def _modelfile_quote(value: str) -> str:
    """Quote a value the way Ollama's parser reads it back: no escapes exist, only ``"..."`` and ``\"\"\"...\"\"\"``."""
    if '"""' in value:
        raise ExportError(f"{value!r} holds triple quotes, which a Modelfile cannot express.")
    if '"' in value or "\n" in value or "\r" in value:
        return f'"""{value}"""'
    return f'"{value}"'


def modelfile_text(gguf: str, eos: str | None, adapter: str | None = None) -> str:
    """The Modelfile: FROM the GGUF (+ ADAPTER), TEMPLATE and stops from :data:`PROMPT`, temperature 0.

    A path is written bare (Ollama reads FROM and ADAPTER to the end of the line), so one holding a
    line break, which would start a command of its own, is refused."""
    for what, path in (("GGUF", gguf), ("adapter", adapter)):
        if path is not None and any(ch in str(path) for ch in "\r\n"):
            raise ExportError(f"the {what} path {str(path)!r} holds a line break, which would add a line to the "
                              "Modelfile; rename the file or folder")
    lines = [f"FROM {gguf}"]
    if adapter:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f"TEMPLATE {_modelfile_quote(PROMPT.ollama_template())}")
    lines += [f"PARAMETER stop {_modelfile_quote(stop)}" for stop in PROMPT.stop_sequences(eos)]
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


OLLAMA_NAME = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")


def write_modelfile(gguf_path: str | Path, out_dir: str | Path | None = None, model_name: str = "slipcore",
                    adapter_path: str | Path | None = None, eos: str | None = None) -> OllamaRecipe:
    """Write ``Modelfile`` next to the GGUF (paths relative when beside it) and return the ollama commands.

    With ``adapter_path``, ``gguf_path`` must be the *base* model's GGUF (Ollama's ADAPTER route).
    """
    if not isinstance(model_name, str) or not OLLAMA_NAME.fullmatch(model_name):
        raise ExportError(f"model_name {model_name!r} is not an Ollama model name: letters, digits and _ . - "
                          "(a namespace/ and a :tag allowed), starting with a letter or digit")
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise ExportError(f"no GGUF file at {gguf_path}: run to_gguf first.")
    if adapter_path and not Path(adapter_path).is_file():
        raise ExportError(f"adapter_path {str(adapter_path)!r}: no adapter GGUF there (adapter_to_gguf writes it)")
    out = Path(out_dir or gguf_path.parent).resolve()
    out.mkdir(parents=True, exist_ok=True)

    def ref(path: Path) -> str:
        """Relative to the Modelfile when it shares a folder tree with it, so the folder can be copied."""
        if path.is_relative_to(out.parent):
            return "./" + os.path.relpath(path, out) if path.parent == out else os.path.relpath(path, out)
        return str(path)

    adapter = Path(adapter_path).resolve() if adapter_path else None
    text = modelfile_text(ref(gguf_path), eos if eos is not None else eos_token(gguf_path),
                          ref(adapter) if adapter else None)
    modelfile = out / "Modelfile"
    whole_files.write_text(modelfile, text)
    instruction = "You are the planner agent (id 2). Goal[1]: Add rate limiting. Respond with one nSLIP message."
    return OllamaRecipe(
        modelfile=modelfile,
        model_name=model_name,
        create_command=f"ollama create {model_name} -f {shlex.quote(str(modelfile))}",
        run_command=f"ollama run {model_name} {shlex.quote(instruction)}",
    )


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, value) pairs exactly as Ollama's parser (``parser/parser.go``) reads a Modelfile.

    A value runs to the end of its line, or on past newlines until its ``\"\"\"`` closes; quotes are
    stripped and nothing is unescaped (a stop of one newline needs a real newline in triple quotes).
    Only the commands we write are supported (FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER, comments).
    """
    commands: list[tuple[str, str]] = []
    pos, n = 0, len(text)
    while pos < n:
        ch = text[pos]
        if ch in " \t\r\n":
            pos += 1
            continue
        if ch == "#":
            pos = text.find("\n", pos)
            pos = n if pos == -1 else pos
            continue
        start = pos
        while pos < n and text[pos].isalpha():
            pos += 1
        name = text[start:pos].lower()
        if name not in {"from", "adapter", "template", "system", "parameter"} or pos >= n or text[pos] not in " \t":
            raise ExportError(f"Modelfile line {_line(text, start)}: {text[start:pos + 1].strip()!r} is not a command "
                              "it supports (FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER) followed by a space")
        pos += 1
        if name == "parameter":
            start = pos
            while pos < n and (text[pos].isalnum() or text[pos] == "_"):
                pos += 1
            if pos == start or pos >= n or text[pos] not in " \t":  # Ollama: a name, a space, then its value
                raise ExportError(f"Modelfile line {_line(text, start)}: PARAMETER needs a name, a space and a value")
            name = text[start:pos]
            pos += 1
        buffer, value_start = "", pos
        while True:  # a value ends at a newline (or the end) once its quotes are closed
            ch = text[pos] if pos < n else None
            if ch is None or ch in "\r\n":
                value, ok = _modelfile_unquote(buffer.strip())
                if ok:
                    commands.append((name, value))
                    break
                if ch is None:
                    raise ExportError(f"Modelfile line {_line(text, value_start)}: a quoted value is never closed "
                                      "(it runs to the end of the file)")
            buffer += ch
            pos += 1
    return commands


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _modelfile_unquote(value: str) -> tuple[str, bool]:
    if value.startswith('"""'):
        return (value[3:-3], True) if len(value) >= 6 and value.endswith('"""') else ("", False)
    if value.startswith('"'):
        return (value[1:-1], True) if len(value) >= 2 and value.endswith('"') else ("", False)
    return value, True


PROMPT_ACTION = re.compile(r"\{\{-?\s*\.Prompt\s*-?\}\}")  # Go template: {{ .Prompt }}, {{.Prompt}}, {{- .Prompt -}}


def render_template(template: str, prompt: str) -> str:
    """What Ollama sends the model for ``/api/generate``: the template with its ``{{ .Prompt }}`` filled in
    (Go's spacing variants too; the trim markers ``{{-``/``-}}`` are not applied)."""
    if not PROMPT_ACTION.search(template):
        raise ExportError(f"the TEMPLATE {template!r} has no {{{{ .Prompt }}}}: the prompt would never reach the model")
    return PROMPT_ACTION.sub(lambda _: prompt, template)
