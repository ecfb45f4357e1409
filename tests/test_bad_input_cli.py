"""Every command line refuses a bad flag value with exit status 2, naming the flag, and writes nothing (issue #38).

Each row calls the command's ``main(argv)`` in this process (argparse stops it before any model loads)
and checks that the message on stderr names the flag and that ``benchmarks/results`` and ``outputs``
are as they were. A few rows run the real command in a child process, as a user types it.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
A_FILE = str(REPO / "README.md")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass in it looks its module up there
    spec.loader.exec_module(module)
    return module


def _entry(target: str):
    """``main`` of a module (``benchmarks.run_all``) or the argument reader of a script (``scripts/train``)."""
    if target.startswith("scripts/"):
        module = _script(target.split("/", 1)[1])
        return getattr(module, "parse_args", None) or module.main
    return importlib.import_module(target).main


ROWS = {  # command -> [(argv, the flag the message must name)]
    "benchmarks.run_all": [
        (["--only", "bogus"], "--only"), (["--only", ""], "--only"), (["--only", "speed,speed"], "--only"),
        (["--only", "token_economics,"], "--only"), (["--only", "Speed"], "--only"),
        (["--eval-limit", "0"], "--eval-limit"), (["--eval-limit", "-3"], "--eval-limit"),
        (["--eval-limit", "all"], "--eval-limit"), (["--rank-steps", "0"], "--rank-steps"),
        (["--rank-steps", "1.5"], "--rank-steps"), (["--bogus"], "--bogus"),
    ],
    "benchmarks.quality_curve": [
        (["--steps", ""], "--steps"), (["--steps", "a,b"], "--steps"), (["--steps", "0"], "--steps"),
        (["--steps", "0,-4"], "--steps"), (["--steps", "4,4"], "--steps"), (["--steps", "4,,8"], "--steps"),
        (["--steps", "4.5"], "--steps"), (["--ranks", "0"], "--ranks"), (["--ranks", "8,x"], "--ranks"),
        (["--ranks", ""], "--ranks"), (["--rank-steps", "0"], "--rank-steps"), (["--curve-rank", "0"], "--curve-rank"),
        (["--curve-rank", "-1"], "--curve-rank"), (["--lr", "0"], "--lr"), (["--lr", "-1e-3"], "--lr"),
        (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "fast"], "--lr"),
        (["--batch-size", "0"], "--batch-size"), (["--batch-size", "2.0"], "--batch-size"),
        (["--loraplus-ratio", "0"], "--loraplus-ratio"), (["--loraplus-ratio", "nan"], "--loraplus-ratio"),
        (["--seed", "-1"], "--seed"), (["--seed", "1.5"], "--seed"), (["--eval-limit", "0"], "--eval-limit"),
        (["--eval-limit", "-1"], "--eval-limit"), (["--data", "/nonexistent/data"], "--data"),
        (["--data", A_FILE], "--data"), (["--out-suffix", "/../../x"], "--out-suffix"),
        (["--out-suffix", "../x"], "--out-suffix"), (["--out-suffix", ".hidden"], "--out-suffix"),
        (["--out-suffix", "a b"], "--out-suffix"), (["--out-suffix", "a\nb"], "--out-suffix"),
        (["--model", ""], "--model"), (["--model", " tiny"], "--model"), (["--model", "a\tb"], "--model"),
    ],
    "benchmarks.speed": [
        (["--only", "bogus"], "--only"), (["--only", ""], "--only"), (["--only", "training,training"], "--only"),
        (["--warmup", "-1"], "--warmup"), (["--timed", "0"], "--timed"), (["--timed", "x"], "--timed"),
        (["--prompts", "0"], "--prompts"), (["--notebooks", "99"], "--notebooks"),
        (["--notebooks", "01,zz"], "--notebooks"), (["--notebooks", ""], "--notebooks"), (["--model", ""], "--model"),
        (["--one-backend", "torch"], "--one-backend"), (["--attention", "flash"], "--attention"),
    ],
    "benchmarks.serving": [
        (["--prompts", "0"], "--prompts"), (["--prompts", "-8"], "--prompts"), (["--slots", "0"], "--slots"),
        (["--slots", "two"], "--slots"), (["--model", ""], "--model"),
    ],
    "benchmarks.quantization": [
        (["--prompts", "0"], "--prompts"), (["--prompts", "-1"], "--prompts"), (["--model", " x"], "--model"),
    ],
    "benchmarks.role_adapters": [(["--prompts", "0"], "--prompts"), (["--model", ""], "--model")],
    "benchmarks.token_economics": [(["--quick=yes"], "--quick"), (["--bogus"], "--bogus")],
    "benchmarks.reliability": [
        (["--seeds", "a"], "--seeds"), (["--steps", "0"], "--steps"), (["--eval-limit", "0"], "--eval-limit"),
        (["--conversations", "0"], "--conversations"), (["--adapter", "/nonexistent/lora"], "--adapter"),
        (["--steps", "x"], "--steps"), (["--out-suffix", "../x"], "--out-suffix"), (["--model", " x"], "--model"),
        (["--data", "README.md"], "--data"), (["--out", "README.md"], "--out"), (["--seeds", "1,1"], "--seeds"),
        (["--seeds", "-1"], "--seeds"),
    ],
    "scripts/train": [
        (["--max-steps", "0"], "--max-steps"), (["--max-steps", "-5"], "--max-steps"),
        (["--max-steps", "1.9"], "--max-steps"), (["--lora-rank", "0"], "--lora-rank"),
        (["--learning-rate", "0"], "--learning-rate"), (["--learning-rate", "nan"], "--learning-rate"),
        (["--learning-rate", "-2e-3"], "--learning-rate"), (["--save-steps", "0"], "--save-steps"),
        (["--eval-limit", "0"], "--eval-limit"), (["--eval-limit", "-1"], "--eval-limit"), (["--model", ""], "--model"),
        (["--model", "tiny\n"], "--model"), (["--backend", "torch"], "--backend"),
    ],
    "scripts/serve_vllm": [
        (["--port", "0"], "--port"), (["--port", "70000"], "--port"), (["--port", "http"], "--port"),
        (["--check", "not a url"], "--check"), (["--check", "ftp://host"], "--check"), (["--check", "http://"], "--check"),
        (["--check", "http://host:port"], "--check"), (["--lora", "noequals"], "--lora"), (["--lora", "=path"], "--lora"),
        (["--lora", "a b=c"], "--lora"), (["--lora", "x="], "--lora"),
    ],
    "scripts/gpu_check": [
        (["--steps", "0"], "--steps"), (["--prompts", "0"], "--prompts"), (["--build-wait", "0"], "--build-wait"),
        (["--build-wait", "-1"], "--build-wait"),
    ],
    "scripts/gpu_bundle": [
        (["--limit-mib", "0"], "--limit-mib"), (["--limit-mib", "nan"], "--limit-mib"), (["--jobs", "0"], "--jobs"),
    ],
    "slipcore_nb.dataset": [
        (["--num-conversations", "0"], "--num-conversations"), (["--num-conversations", "x"], "--num-conversations"),
        (["--eval-conversations", "0"], "--eval-conversations"),
        (["--num-conversations", "10", "--eval-conversations", "5"], "--num-conversations/--eval-conversations"),
        (["--num-conversations", "100000"], "--num-conversations/--eval-conversations"),
        (["--out", A_FILE], "--out"), (["--seed", "x"], "--seed"),
    ],
    "slipcore_nb.runner": [(["99"], "names"), (["01", "bogus"], "names")],
    "slipcore_nb.llama_cpp_build": [(["--bogus"], "--bogus")],
    "slipcore_nb.llama_server": [(["--build=yes"], "--build")],
}
CASES = [pytest.param(target, argv, flag, id=f"{target}-{' '.join(argv)!r}")
         for target, rows in ROWS.items() for argv, flag in rows]


def _snapshot() -> dict:
    """What a command must leave as it was: the results files and the outputs folder."""
    found = {}
    for root in (REPO / "benchmarks" / "results", REPO / "outputs", REPO / "data"):
        for path in root.rglob("*") if root.is_dir() else ():
            if path.is_file():
                stat = path.stat()
                found[path] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture
def before():
    """Taken as each case starts (other people's runs may change results/ between cases)."""
    return _snapshot()


@pytest.mark.parametrize("target, argv, flag", CASES)
def test_a_bad_flag_exits_2_naming_the_flag_and_writes_nothing(capsys, before, target, argv, flag):
    main = _entry(target)
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert re.search(rf"(argument {re.escape(flag)}(/|:)|{re.escape(flag)}\b)", err), err
    assert _snapshot() == before


@pytest.mark.parametrize("command, flag", [
    (["-m", "benchmarks.run_all", "--only", "bogus"], "--only"),
    (["-m", "benchmarks.quality_curve", "--out-suffix", "/../../../tmp/x"], "--out-suffix"),
    (["scripts/train.py", "--max-steps", "0"], "--max-steps"),
    (["-m", "slipcore_nb.dataset", "--eval-conversations", "-1"], "--eval-conversations"),
])
def test_a_bad_flag_as_typed_in_a_shell(before, command, flag):
    done = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"argument {flag}:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert _snapshot() == before


def test_the_table_covers_every_command():
    commands = {f"benchmarks.{p.stem}" for p in (REPO / "benchmarks").glob("*.py")
                if "def main(" in p.read_text()} | {f"scripts/{p.stem}" for p in (REPO / "scripts").glob("*.py")}
    commands |= {f"slipcore_nb.{p.stem}" for p in (REPO / "slipcore_nb").glob("*.py")
                 if "def main(" in p.read_text() and "add_argument" in p.read_text()}
    assert commands <= set(ROWS), sorted(commands - set(ROWS))
    assert len(CASES) >= 120
