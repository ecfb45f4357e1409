"""THE prompt format: one object renders every prompt string the package uses.

Training text, the generation prompt, and the Ollama ``TEMPLATE`` and stop list all come from
:data:`PROMPT`, so a model is always asked exactly the way it was trained. A served model that
answers garbage or never stops is almost always a template that differs from training by a
newline; a test renders the Ollama template and compares it byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptFormat:
    """The guide's Alpaca-style format: ``### Instruction:\\n{input}\\n\\n### Response:\\n{target}<eos>``."""

    instruction_header: str = "### Instruction:\n"
    response_header: str = "\n\n### Response:\n"
    # The answer is one nSLIP line: a newline or a new section header means the model is done.
    extra_stops: tuple[str, ...] = ("###", "\n")

    def prompt(self, instruction: str) -> str:
        """What the model sees at generation time; the answer starts right after it."""
        if not isinstance(instruction, str):  # None or a number would be trained or asked as its repr
            raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
        return f"{self.instruction_header}{instruction}{self.response_header}"

    def completion(self, target: str, eos_token: str) -> str:
        """What the model learns to produce after :meth:`prompt` (the loss is taken on this only)."""
        if not isinstance(eos_token, str):  # "" is text without an end (a tokenizer's corpus); None is a bug
            raise ValueError(f"eos_token must be the tokenizer's end-of-sequence text, got {eos_token!r}")
        if not isinstance(target, str):
            raise TypeError(f"target must be a str (one nSLIP line), got {type(target).__name__}")
        stop = next((s for s in self.stop_sequences(eos_token) if s in target), None)
        if stop is not None:  # the served model would stop there: the answer could never be produced whole
            raise ValueError(f"target {target!r} holds the stop sequence {stop!r}; an answer is one line without one")
        return f"{target}{eos_token}"

    def training_text(self, instruction: str, target: str, eos_token: str) -> str:
        """Prompt and completion as one string, e.g. for token-length statistics."""
        return self.prompt(instruction) + self.completion(target, eos_token)

    def ollama_template(self) -> str:
        """The Modelfile TEMPLATE (Go template syntax) that renders to :meth:`prompt`."""
        return self.prompt("{{ .Prompt }}")

    def stop_sequences(self, eos_token: str | None) -> list[str]:
        """Stops for Ollama and llama.cpp: the tokenizer's EOS text, then :attr:`extra_stops`."""
        if eos_token is not None and not isinstance(eos_token, str):
            raise ValueError(f"eos_token must be the tokenizer's end-of-sequence text or None, got {eos_token!r}")
        stops = [eos_token] if eos_token else []
        return stops + [s for s in self.extra_stops if s not in stops]


PROMPT = PromptFormat()
