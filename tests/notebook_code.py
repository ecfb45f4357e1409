"""Test helper: the calls a notebook writes out in its cells, so tests can hold them to the library's."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from IPython.core.inputtransformer2 import TransformerManager

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_call(notebook: str, callee: str) -> ast.Call:
    """The one call of ``callee`` (as written, e.g. ``trl.SFTConfig``) in the code cells of ``notebook``."""
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    python = TransformerManager().transform_cell  # the Colab cell's !git is IPython syntax
    calls = [node for cell in cells if cell["cell_type"] == "code"
             for node in ast.walk(ast.parse(python("".join(cell["source"]))))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == callee]
    assert len(calls) == 1, f"{notebook} should call {callee} once, found {len(calls)}"
    return calls[0]


def evaluated(call: ast.Call, namespace: dict):
    """The call itself, evaluated in ``namespace``."""
    return eval(compile(ast.Expression(call), "<notebook>", "eval"), dict(namespace))


def keywords(call: ast.Call, namespace: dict) -> dict:
    """The call's keyword arguments, each evaluated in ``namespace`` (positional ones are left out)."""
    return {kw.arg: eval(compile(ast.Expression(kw.value), "<notebook>", "eval"), dict(namespace))
            for kw in call.keywords if kw.arg is not None}
