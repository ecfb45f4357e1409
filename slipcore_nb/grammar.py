"""A GBNF grammar for nSLIP, generated from :mod:`slipcore_nb.protocol`'s tables, and a checker that runs it.

With the grammar, llama.cpp can only sample canonical messages: header fields in
:data:`~slipcore_nb.protocol.HEADER_FIELDS` order, then optional slots in
:data:`~slipcore_nb.protocol.SLOT_ORDER`, act and frame codes limited to their enums, base62 numbers
without leading zeros, and every slot value either such a number or a string quoted with the
``\\\\`` and ``\\"`` escapes (the spec lets any slot hold either). A protocol change made in
``protocol.py`` changes the grammar with it.

The grammar admits a subset of what :func:`~slipcore_nb.protocol.decode` accepts, on purpose:
numbers have at most :data:`MAX_INT_DIGITS` digits and strings at most :data:`MAX_STRING_CHARS`
printable ASCII characters, so every constrained generation ends within a bounded number of
tokens and an answer stays one line (the prompt format stops at a newline).

:class:`GrammarChecker` answers "does the grammar admit this text?" with llama.cpp's own grammar
engine (its grammar sampler, fed token by token), not with a second matcher written in Python.
"""

from __future__ import annotations

import ctypes
import typing
from enum import IntEnum
from pathlib import Path

from .protocol import BASE62_DIGITS, END, ESCAPE, HEADER_FIELDS, QUOTE, SEP, SLOT_ORDER, START, Message, to_base62

# 62**11 > 2**64, so any 64-bit id fits; the bound also guarantees that sampling terminates.
MAX_INT_DIGITS = 11
MAX_STRING_CHARS = 64
ROOT = "root"


def _literal(text: str) -> str:
    """A GBNF string literal; only backslash and double quote need escaping in our alphabet."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _char_class(chars: str) -> str:
    """``[...]`` for a set of ASCII characters, with consecutive runs written as ranges and \\x escapes."""
    codes = sorted({ord(ch) for ch in chars})
    runs: list[tuple[int, int]] = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1] = (runs[-1][0], code)
        else:
            runs.append((code, code))
    parts = [f"\\x{lo:02X}" if lo == hi else f"\\x{lo:02X}-\\x{hi:02X}" for lo, hi in runs]
    return "[" + "".join(parts) + "]"


def _repeat(item: str, most: int | None) -> str:
    return f"{item}*" if most is None else f"{item}{{0,{most}}}"


def nslip_gbnf(max_int_digits: int | None = MAX_INT_DIGITS, max_string_chars: int | None = MAX_STRING_CHARS) -> str:
    """The grammar text (root rule ``root``); ``None`` lifts a length bound."""
    enum_of = {name: hint for name, hint in typing.get_type_hints(Message).items()
               if isinstance(hint, type) and issubclass(hint, IntEnum)}
    rules: dict[str, str] = {}

    header = [_literal(START)]
    for i, (prefix, attr) in enumerate(HEADER_FIELDS.items()):
        header.append(_literal((SEP if i else "") + prefix))
        if attr in enum_of:
            rules[attr] = " | ".join(_literal(to_base62(member.value)) for member in enum_of[attr])
            header.append(attr)
        else:
            header.append("int")
    slots = []
    for slot in SLOT_ORDER:
        name = "slot-" + slot.name.lower().replace("_", "-")
        rules[name] = f"{_literal(SEP + slot.value)} value"
        slots.append(f"{name}?")
    rules = {ROOT: " ".join(header + slots + [_literal(END)]), **rules}

    nonzero = BASE62_DIGITS[1:]
    most = None if max_int_digits is None else max_int_digits - 1
    rules["value"] = "int | string"
    rules["int"] = f"{_literal(BASE62_DIGITS[0])} | {_char_class(nonzero)} {_repeat(_char_class(BASE62_DIGITS), most)}"
    printable = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in (QUOTE, ESCAPE))
    rules["string"] = f"{_literal(QUOTE)} {_repeat('string-char', max_string_chars)} {_literal(QUOTE)}"
    rules["string-char"] = f"{_char_class(printable)} | {_literal(ESCAPE)} {_char_class(QUOTE + ESCAPE)}"
    return "".join(f"{name} ::= {body}\n" for name, body in rules.items())


def write_gbnf(path: str | Path, **bounds) -> Path:
    """Write the grammar to a ``.gbnf`` file (for ``llama-cli --grammar-file`` or a notebook to show)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nslip_gbnf(**bounds))
    return path


class GrammarChecker:
    """Asks llama.cpp's grammar engine whether a text is admitted, using a GGUF model's vocabulary.

    The text is split into vocabulary pieces (longest match; byte tokens cover anything else) and
    fed to llama.cpp's grammar sampler one token at a time: each token must keep a non ``-inf``
    logit, and after the last one the end-of-generation token must be allowed.
    """

    def __init__(self, gguf_path: str | Path, gbnf: str | None = None):
        import llama_cpp

        self._lib = llama_cpp
        self._llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self.gbnf = gbnf or nslip_gbnf()
        self._eos = llama_cpp.llama_vocab_eos(self._vocab)
        self._pieces: dict[bytes, int] = {}
        buffer = ctypes.create_string_buffer(256)
        for token in range(llama_cpp.llama_vocab_n_tokens(self._vocab)):
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
            if n > 0:
                self._pieces.setdefault(buffer.raw[:n], token)
        self._longest = max(map(len, self._pieces))
        # Fail now, with llama.cpp's parser, if the grammar text itself is broken.
        self._free(self._new_sampler())

    def _new_sampler(self):
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, self.gbnf.encode(), ROOT.encode())
        if not sampler:
            raise ValueError("llama.cpp rejected the GBNF grammar (see its log above)")
        return sampler

    def _free(self, sampler) -> None:
        self._lib.llama_sampler_free(sampler)

    def tokens(self, text: str) -> list[int]:
        """A tokenization of ``text`` into vocabulary pieces whose bytes concatenate to it exactly."""
        data, pos, out = text.encode(), 0, []
        while pos < len(data):
            for size in range(min(self._longest, len(data) - pos), 0, -1):
                token = self._pieces.get(data[pos : pos + size])
                if token is not None:
                    out.append(token)
                    pos += size
                    break
            else:
                raise ValueError(f"byte {data[pos]:#x} at offset {pos} has no token in this vocabulary")
        return out

    def _allowed(self, sampler, token: int) -> bool:
        candidate = self._lib.llama_token_data(id=token, logit=0.0, p=0.0)
        array = self._lib.llama_token_data_array(
            data=ctypes.pointer(candidate), size=1, selected=-1, sorted=False)
        self._lib.llama_sampler_apply(sampler, ctypes.byref(array))
        return candidate.logit != float("-inf")

    def accepts(self, text: str) -> bool:
        """True when llama.cpp's grammar engine admits exactly ``text`` as one complete message."""
        sampler = self._new_sampler()
        try:
            for token in self.tokens(text):
                if not self._allowed(sampler, token):
                    return False
                self._lib.llama_sampler_accept(sampler, token)
            return self._allowed(sampler, self._eos)
        finally:
            self._free(sampler)

    def close(self) -> None:
        self._llm.close()
