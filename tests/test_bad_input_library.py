"""Bad input to the library functions the notebooks call gets a clear error naming the place (issue #38).

One table: each row is a call a user can make with something wrong in it, the error type it must
raise and a pattern the message must hold, which names the field, argument, variable or position.
Nothing here loads a model, builds native code or starts a kernel.
"""

from __future__ import annotations

import random
import re

import pytest

from slipcore_nb import (artifacts, conversations, dataset, economics, environment, evaluate, grammar, protocol, registry,
                         training)
from slipcore_nb.dataset import DatasetError
from slipcore_nb.export import ExportError
from slipcore_nb.prompts import PROMPT
from slipcore_nb.protocol import Act, Frame, Message, NSlipError, Slot

GOOD = {"role": "planner", "input": "You are a planner agent. Goal[1]: x. Respond with nSLIP.",
        "target": '@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#'}
SPEC = registry.get_spec("tiny")


def message(**fields) -> Message:
    return Message(**{**dict(conv=1, turn=2, src=1, dst=0, act=Act.REQUEST, frame=Frame.TASK, slots={}), **fields})


def case(call, error, says, id):
    return pytest.param(call, error, says, id=id)


def encode_cases():
    """Every header field refuses what is not a wire int, naming the field."""
    bad = {"float": 1.9, "bool": True, "digits": "5", "negative": -1, "none": None, "huge": 62**11, "list": [1]}
    for field in ("conv", "turn", "src", "dst"):
        for kind, value in bad.items():
            yield case(lambda f=field, v=value: protocol.encode(message(**{f: v})), NSlipError,
                       rf"^{field} needs a non-negative int", f"encode-{field}-{kind}")
    for field, values in (("act", (11, -1, "REQUEST", True, 2.0)), ("frame", (5, "TASK", None, False))):
        for value in values:
            yield case(lambda f=field, v=value: protocol.encode(message(**{f: v})), NSlipError, rf"^{field} must be one of",
                       f"encode-{field}-{value!r}")
    slot_bad = {"float": 1.5, "bool": False, "none": None, "bytes": b"x", "negative": -3}
    for kind, value in slot_bad.items():
        yield case(lambda v=value: protocol.encode(message(slots={Slot.GOAL_ID: v})), NSlipError, r"slot GOAL_ID",
                   f"encode-slot-{kind}")
    for kind, value, says in (("too-long", "x" * 65, "a string of 65 characters"), ("newline", "a\nb", "control"),
                              ("tab", "a\tb", "control"), ("del", "a\x7fb", "control"), ("surrogate", "\ud800", "control")):
        yield case(lambda v=value: protocol.encode(message(slots={Slot.TAG: v})), NSlipError, rf"slot TAG: .*{says}",
                   f"encode-tag-{kind}")
    yield case(lambda: protocol.encode(message(slots={"g": 1})), NSlipError, r"slots must be keyed by Slot",
               "encode-slot-key-str")
    yield case(lambda: protocol.encode(message(slots=None)), NSlipError, r"slots must be a dict", "encode-slots-none")
    yield case(lambda: protocol.encode(message(slots=[1])), NSlipError, r"slots must be a dict", "encode-slots-list")
    yield case(lambda: protocol.encode({"conv": 1}), NSlipError, r"encode needs a Message, got dict", "encode-dict")
    yield case(lambda: protocol.encode(None), NSlipError, r"encode needs a Message", "encode-none")


DECODE = [  # text, what the message must say (each names a position and usually the field)
    ("", r"position 0: empty input"),
    (" " + GOOD["target"], r"position 0: message must start with '@'"),
    (GOOD["target"] + "\n", r"position \d+: text after closing '#'"),
    ("@a4|f1|c01|S1|d0|T2#", r"position 8: leading zero in field 'c'"),
    ("@a4|f1|c1|S1|d0|T2|g" + "1" * 12 + "#", r"number in field 'g' longer than 11 digits"),
    ("@a4|f1|c1|S1|d0|T2|g" + "1" * 1_000_000 + "#", r"number in field 'g' longer than 11 digits"),
    ('@a4|f1|c1|S1|d0|T2|t"' + "x" * 65 + '"#', r"string in field 't' longer than 64 characters"),
    ('@a4|f1|c1|S1|d0|T2|t"a\nb"#', r"position 22: control character '\\n' in the string of field 't'"),
    ('@a4|f1|c1|S1|d0|T2|t"a\x00b"#', r"control character '\\x00' in the string of field 't'"),
    ('@a4|f1|c1|S1|d0|T2|t"a\\nb"#', r"bad escape '\\n' in string"),
    ('@a4|f1|c1|S1|d0|T2|t"open#', r"unterminated string opened at position 20"),
    ('@a4|f1|c1|S1|d0|T2|t"x"y#', r"text after closing quote of field 't'"),
    ("@a4|f1|c1|S1|d0|T2|a4#", r"position 19: duplicate header field 'a'"),
    ("@a4|f1|c1|S1|d0|T2|g1|g2#", r"position 22: duplicate slot 'g' \(GOAL_ID\)"),
    ("@a4|f1|c1|S1|d0|T2|x1#", r"position 19: unknown field prefix 'x'"),
    ("@a4|f1|c1|S1|d0|T2||g1#", r"position 19: empty field"),
    ("@a4|f1|c|S1|d0|T2#", r"empty field 'c': a value is required"),
    ("@a4|f1|c1|S1|d0#", r"missing header field 'T' \(turn\)"),
    ("@aB|f1|c1|S1|d0|T2#", r"position 2: act code 11 out of range 0..10"),
    ("@a4|f5|c1|S1|d0|T2#", r"position 5: frame code 5 out of range 0..4"),
    ("@a4|f1|c1|S1|d0|T2", r"missing closing '#'"),
    ("@a4|f1|c-1|S1|d0|T2#", r"bad base62 digit '-' in field 'c'"),
    ("@a4|f1|c1.5|S1|d0|T2#", r"bad base62 digit '.' in field 'c'"),
    ("@a4 |f1|c1|S1|d0|T2#", r"bad base62 digit ' ' in field 'a'"),
    ("@a4|f1|c1|S1|d0|T2|k\u0661#", r"bad base62 digit '\u0661' in field 'k'"),
    ("@a4|f1|c1|S1|d0|T2##", r"text after closing '#'"),
]


def protocol_cases():
    yield from encode_cases()
    for i, (text, says) in enumerate(DECODE):
        yield case(lambda t=text: protocol.decode(t), NSlipError, says, f"decode-{i}")
    for kind, value in (("none", None), ("bytes", GOOD["target"].encode()), ("int", 5)):
        yield case(lambda v=value: protocol.decode(v), NSlipError, r"decode needs a str", f"decode-{kind}")
        yield case(lambda v=value: protocol.extract(v), NSlipError, r"extract needs a str", f"extract-{kind}")
    yield case(lambda: protocol.to_base62(-1), NSlipError, r"base62 needs a non-negative int", "to_base62-negative")
    yield case(lambda: protocol.to_base62(62**11), NSlipError, r"below 62\*\*11", "to_base62-too-big")
    yield case(lambda: protocol.to_base62(2.0), NSlipError, r"base62 needs", "to_base62-float")
    yield case(lambda: protocol.from_base62("!"), NSlipError, r"bad base62 digit '!' at offset 0", "from_base62-digit")
    yield case(lambda: protocol.from_base62(""), NSlipError, r"empty base62 number", "from_base62-empty")
    yield case(lambda: protocol.from_base62(5), NSlipError, r"base62 digits must be a str", "from_base62-int")
    yield case(lambda: protocol.from_base62("1" * 10**6), NSlipError, r"of 1000000 digits, at most 11",
               "from_base62-million-digits")
    yield case(lambda: protocol.quote(5), NSlipError, r"quoted value must be a str", "quote-int")
    yield case(lambda: protocol.quote("a\nb"), NSlipError, r"quoted value: control character", "quote-newline")
    yield case(lambda: protocol.quote("x" * 65), NSlipError, r"quoted value: a string of 65", "quote-too-long")


def dataset_cases():
    examples = {
        "not-a-dict": (["x"], r"examples\[0\]: expected a JSON object"),
        "no-target": ({"role": "planner", "input": "x"}, r"examples\[0\]: missing field 'target'"),
        "no-role": ({"input": "x", "target": GOOD["target"]}, r"examples\[0\]: missing field 'role'"),
        "int-input": ({**GOOD, "input": 7}, r"examples\[0\]: field 'input' must be a string, got int"),
        "none-target": ({**GOOD, "target": None}, r"examples\[0\]: field 'target' must be a string, got NoneType"),
        "unknown-role": ({**GOOD, "role": "tester"}, r"examples\[0\]: field 'role' is 'tester'"),
        "capital-role": ({**GOOD, "role": "Planner"}, r"examples\[0\]: field 'role' is 'Planner'"),
        "blank-input": ({**GOOD, "input": "  \n"}, r"examples\[0\]: field 'input' is blank"),
        "bad-target": ({**GOOD, "target": "@a4|f1#"}, r"examples\[0\]: field 'target' is not valid nSLIP \(position"),
        "target-with-prose": ({**GOOD, "target": "Sure: " + GOOD["target"]}, r"examples\[0\]: field 'target' is not valid nSLIP"),
        "extra-field": ({**GOOD, "source": "mine"}, r"examples\[0\]: unknown field 'source'"),
    }
    for kind, (example, says) in examples.items():
        rows = example if isinstance(example, list) else [example]
        yield case(lambda r=rows: dataset.write_jsonl("/nonexistent/never/train.jsonl", r), DatasetError,
                   r"^/nonexistent/never/train\.jsonl: " + says,
                   f"write_jsonl-{kind}")
    yield case(lambda: dataset.write_jsonl("/nonexistent/t.jsonl", []), DatasetError, r"t\.jsonl: no examples",
               "write_jsonl-empty")
    yield case(lambda: dataset.write_jsonl("/nonexistent/t.jsonl", GOOD), TypeError,
               r"t\.jsonl: examples must be a list of dataset rows, got dict", "write_jsonl-one-dict")
    for name, kwargs, says in (
        ("zero", dict(num_conversations=0), r"num_conversations \(0\)"),
        ("eval-half", dict(num_conversations=10, eval_conversations=5), r"2 \* eval_conversations \(5\)"),
        ("too-many", dict(num_conversations=10**6), r"num_conversations \+ eval_conversations"),
        ("str", dict(num_conversations="760"), r"build_splits: num_conversations must be an int, got '760'"),
        ("float-seed", dict(seed=4.2), r"build_splits: seed must be an int, got 4.2"),
        ("none-seed", dict(seed=None), r"build_splits: seed must be an int, got None"),
        ("bool-eval", dict(eval_conversations=True), r"eval_conversations must be an int, got True"),
    ):
        yield case(lambda k=kwargs: dataset.build_splits(**k), ValueError, says, f"build_splits-{name}")
    yield case(lambda: dataset.load_split("test"), ValueError, r"split must be one of .*got 'test'", "load_split-name")
    yield case(lambda: dataset.load_split("train", "/nonexistent-folder"), FileNotFoundError,
               r"/nonexistent-folder/train\.jsonl is missing: run `python -m slipcore_nb\.dataset", "load_split-no-folder")
    yield case(lambda: dataset.held_out_goals("train"), ValueError, r"held_out_goals is for the held-out splits",
               "held_out_goals-train")
    yield case(lambda: dataset.load_or_build(__file__), NotADirectoryError, r"data_dir .* is a file",
               "load_or_build-a-file")


def config(**fields):
    base = dict(model="m", max_steps=1, learning_rate=1e-3, lora_rank=1, batch_size=1, grad_accum=1, save_steps=1,
                output_dir="/tmp/unused")
    return training.TrainConfig(**{**base, **fields})


def training_cases():
    counts = ("max_steps", "lora_rank", "batch_size", "grad_accum", "save_steps", "logging_steps", "max_length")
    for field in counts:
        for kind, value in (("zero", 0), ("float", 2.5), ("str", "8")):
            yield case(lambda f=field, v=value: config(**{f: v}), ValueError, rf"TrainConfig\.{field} must be an int",
                       f"TrainConfig-{field}-{kind}")
    for field in ("warmup_steps", "seed"):
        yield case(lambda f=field: config(**{f: -1}), ValueError, rf"TrainConfig\.{field} must be an int of at least 0",
                   f"TrainConfig-{field}-negative")
    for kind, value in (("zero", 0), ("negative", -1e-3), ("nan", float("nan")), ("inf", float("inf")), ("str", "2e-3"),
                        ("bool", True)):
        yield case(lambda v=value: config(learning_rate=v), ValueError, r"TrainConfig\.learning_rate must be a positive",
                   f"TrainConfig-learning_rate-{kind}")
    yield case(lambda: config(loraplus_lr_ratio=0), ValueError, r"TrainConfig\.loraplus_lr_ratio", "TrainConfig-loraplus-0")
    yield case(lambda: config(model=""), ValueError, r"TrainConfig\.model must be a model name", "TrainConfig-model-empty")
    yield case(lambda: config(output_dir=None), ValueError, r"TrainConfig\.output_dir must be a folder path",
               "TrainConfig-output_dir-none")
    yield case(lambda: config(output_dir=""), ValueError, r"TrainConfig\.output_dir", "TrainConfig-output_dir-empty")
    yield case(lambda: training.TrainConfig.from_spec("tiny"), TypeError, r"from_spec needs a ModelSpec",
               "from_spec-a-name")
    yield case(lambda: training.TrainConfig.from_spec(SPEC, output_dir="/tmp/x", max_steps=-5), ValueError,
               r"TrainConfig\.max_steps must be an int of at least 1, got -5", "from_spec-negative-steps")
    yield case(lambda: training.TrainConfig.from_spec(SPEC, output_dir="/tmp/x", lora_rank=0.5), ValueError,
               r"TrainConfig\.lora_rank", "from_spec-float-rank")
    yield case(lambda: training.TrainConfig.from_spec(SPEC, output_dir="/tmp/x", speed=2), TypeError,
               r"unexpected keyword argument 'speed'", "from_spec-unknown-setting")
    for kind, rows, error, says in (
        ("empty", [], DatasetError, r"no examples"),
        ("no-target", [{"role": "planner", "input": "x"}], DatasetError, r"examples\[0\]: missing field 'target'"),
        ("bad-target", [GOOD, {**GOOD, "target": "@"}], DatasetError, r"examples\[1\]: field 'target' is not valid"),
        ("a-string", "train.jsonl", TypeError, r"examples must be a list of dataset rows, got str"),
        ("none", None, TypeError, r"examples must be a list"),
    ):
        yield case(lambda r=rows: training.start_run(config(output_dir="/nonexistent/run"), r), error, says,
                   f"start_run-{kind}")
    yield case(lambda: training.start_run(config(output_dir=__file__), [GOOD]), NotADirectoryError,
               r"TrainConfig\.output_dir .* is a file", "start_run-output_dir-a-file")
    for name in ("", "  ", None, 5):
        yield case(lambda n=name: training.run_folder_name(n), ValueError, r"a model name is needed",
                   f"run_folder_name-{name!r}")
    yield case(lambda: training.attention_kernel(None, "flash").__enter__(), ValueError,
               r"attention kernel must be one of", "attention_kernel-unknown")


def models_cases():
    for name in ("", " tiny", "tiny ", "a\nb", "a\tb", None, 7):
        yield case(lambda n=name: registry.get_spec(n), ValueError, r"model name .*\(SLIPCORE_MODEL or --model\)",
                   f"get_spec-{name!r}")


def artifacts_cases():
    yield case(lambda: artifacts.path("model.jsn"), KeyError, r"unknown artifact 'model\.jsn'", "path-unknown")
    yield case(lambda: artifacts.save_json("model.json", ["tiny"]), ValueError,
               r"save_json\('model\.json'\): an artifact is a JSON object", "save_json-list")
    yield case(lambda: artifacts.save_json("model.json", {"reason": "x"}), ValueError,
               r"save_json\('model\.json'\): key 'name' must be a non-empty str, got None", "save_json-no-name")
    yield case(lambda: artifacts.save_json("model.json", {"name": " "}), ValueError, r"key 'name' must be a non-empty str",
               "save_json-blank-name")
    yield case(lambda: artifacts.save_json("export.json", {"model": "tiny"}), ValueError, r"key 'merged'",
               "save_json-export-no-merged")
    yield case(lambda: artifacts.save_json("train_metrics.json", {"eval_split": "eval", "eval_examples": "8"}),
               ValueError, r"key 'eval_examples' must be a non-empty int", "save_json-metrics-str-count")
    yield case(lambda: artifacts.save_json("unknown.json", {}), KeyError, r"unknown artifact 'unknown\.json'",
               "save_json-unknown")


def prompt_cases():
    yield case(lambda: PROMPT.prompt(None), TypeError, r"instruction must be a str, got NoneType", "prompt-none")
    yield case(lambda: PROMPT.prompt(5), TypeError, r"instruction must be a str", "prompt-int")
    yield case(lambda: PROMPT.completion(None, "</s>"), TypeError, r"target must be a str", "completion-none-target")
    yield case(lambda: PROMPT.completion(GOOD["target"] + "\n", "</s>"), ValueError, r"holds the stop sequence '\\n'",
               "completion-newline")
    yield case(lambda: PROMPT.completion('@a4|f1|c1|S1|d0|T2|t"###"#', "</s>"), ValueError,
               r"holds the stop sequence '###'", "completion-hash-stop")
    yield case(lambda: PROMPT.completion(GOOD["target"] + "</s>", "</s>"), ValueError, r"stop sequence '</s>'",
               "completion-eos-inside")
    yield case(lambda: PROMPT.training_text("x", GOOD["target"], None), ValueError, r"eos_token must be",
               "training_text-none-eos")
    yield case(lambda: PROMPT.stop_sequences(2), ValueError, r"eos_token must be", "stop_sequences-int")


def evaluate_cases():
    yield case(lambda: evaluate.clean_answer(None), TypeError, r"a raw completion must be a str", "clean_answer-none")
    yield case(lambda: evaluate.clean_answer("x", 2), ValueError, r"eos_token must be", "clean_answer-int-eos")
    yield case(lambda: evaluate.score_outputs([], []), DatasetError, r"^no examples", "score_outputs-empty")
    yield case(lambda: evaluate.score_outputs([GOOD], []), ValueError, r"1 examples but 0 outputs",
               "score_outputs-count")
    yield case(lambda: evaluate.score_outputs([{"role": "planner", "input": "x"}], ["x"]), DatasetError,
               r"examples\[0\]: missing field 'target'", "score_outputs-no-target")
    yield case(lambda: evaluate.score_outputs([GOOD, {**GOOD, "target": "nope"}], ["a", "b"]), DatasetError,
               r"examples\[1\]: field 'target' is not valid nSLIP", "score_outputs-bad-target")
    yield case(lambda: evaluate.score_outputs([GOOD], [None]), TypeError, r"raw_outputs\[0\] must be a str",
               "score_outputs-none-output")
    yield case(lambda: evaluate.answer_budget(None, []), ValueError, r"answer_budget needs at least one example",
               "answer_budget-empty")


def misc_cases():
    yield case(lambda: economics.renderings("@a4#"), NSlipError, r"renderings needs a Message \(decode\(text\)\), got str",
               "renderings-str")
    for kind, value in (("zero", 0), ("str", "11"), ("too-wide", 12), ("bool", True)):
        yield case(lambda v=value: grammar.nslip_gbnf(max_int_digits=v), ValueError, r"max_int_digits must be None or",
                   f"nslip_gbnf-digits-{kind}")
    yield case(lambda: grammar.nslip_gbnf(max_string_chars=-1), ValueError, r"max_string_chars must be",
               "nslip_gbnf-chars-negative")
    yield case(lambda: conversations.conversation(None, "Add rate limiting"), TypeError,
               r"conversation needs rng=random\.Random", "conversation-no-rng")
    yield case(lambda: conversations.conversation(random.Random(1), ""), ValueError, r"goal_text must be one line",
               "conversation-empty-goal")
    yield case(lambda: conversations.conversation(random.Random(1), "a\nb"), ValueError, r"goal_text must be one line",
               "conversation-two-line-goal")
    from slipcore_nb.modelfile import modelfile_text, parse_modelfile, render_template, write_modelfile

    for kind, gguf, adapter in (("newline", "./m\nSYSTEM x.gguf", None), ("cr", "./m\r.gguf", None),
                                ("adapter-newline", "./m.gguf", "./a\n.gguf")):
        yield case(lambda g=gguf, a=adapter: modelfile_text(g, "</s>", a), ExportError, r"path .* holds a line break",
                   f"modelfile_text-{kind}")
    yield case(lambda: modelfile_text("./m.gguf", 'a"""b'), ExportError, r"holds triple quotes", "modelfile_text-eos")
    for name in ("my model", "x;rm -rf ~", "", "-x", "a\nb", None):
        yield case(lambda n=name: write_modelfile(__file__, model_name=n), ExportError,
                   r"model_name .* is not an Ollama model name", f"write_modelfile-name-{name!r}")
    yield case(lambda: write_modelfile("/nonexistent/m.gguf"), ExportError, r"no GGUF file at /nonexistent/m\.gguf",
               "write_modelfile-no-gguf")
    yield case(lambda: write_modelfile(__file__, adapter_path="/nonexistent/a.gguf"), ExportError,
               r"adapter_path '/nonexistent/a\.gguf': no adapter GGUF", "write_modelfile-no-adapter")
    for i, (text, says) in enumerate((
        ("FROM ./m.gguf\nPARAMETER stop\n", r"line 2: PARAMETER needs a name"),
        ("FROM ./m.gguf\nPARAMETER\n", r"line 2: 'PARAMETER' is not a command"),
        ('FROM ./m.gguf\nSYSTEM "open\n', r"line 2: a quoted value is never closed"),
        ("FROM ./m.gguf\nLICENSE MIT\n", r"line 2: 'LICENSE' is not a command"),
        ("\n\n\nFROM: ./m.gguf\n", r"line 4: 'FROM:' is not a command"),
        ("FROM", r"line 1: 'FROM' is not a command"),
    )):
        yield case(lambda t=text: parse_modelfile(t), ExportError, rf"^Modelfile {says}", f"parse_modelfile-{i}")
    for template in ("### Instruction:\n{{ .Input }}", "{{ .prompt }}", "{ .Prompt }", ""):
        yield case(lambda t=template: render_template(t, "x"), ExportError, r"has no \{\{ \.Prompt \}\}",
                   f"render_template-{template!r}")


def serving_cases():
    from slipcore_nb import answering, export
    from slipcore_nb.llama_server import LlamaServer, LlamaServerError

    gguf = __file__  # any file stands in for the model: every check here runs before one is read
    for name, value, says in (("parallel", 0, r"LlamaServer parallel must be an int of at least 1, got 0"),
                              ("ctx_per_slot", -512, r"LlamaServer ctx_per_slot must be an int of at least 1"),
                              ("threads", 1.5, r"LlamaServer threads must be an int"),
                              ("port", 70000, r"LlamaServer port must be a port 1\.\.65535, got 70000"),
                              ("port", "8080", r"LlamaServer port must be a port")):
        yield case(lambda n=name, v=value: LlamaServer(gguf, **{n: v}), ValueError, says, f"LlamaServer-{name}-{value!r}")
    yield case(lambda: LlamaServer(gguf, loras="a.gguf"), ValueError, r"loras must be a tuple .* 'a\.gguf'",
               "LlamaServer-loras-a-string")
    yield case(lambda: LlamaServer(gguf, loras=("/nonexistent/a.gguf",)).start(), LlamaServerError,
               r"LlamaServer loras: no adapter file /nonexistent/a\.gguf", "LlamaServer-loras-missing")
    yield case(lambda: LlamaServer("/nonexistent/m.gguf"), LlamaServerError, r"no model file /nonexistent/m\.gguf",
               "LlamaServer-no-gguf")
    yield case(lambda: answering.answer("one prompt", gguf), TypeError, r"instructions must be a list of str .*single string",
               "answer-a-string")
    yield case(lambda: answering.answer([None], gguf), TypeError, r"instructions must be a list of str", "answer-none-item")
    yield case(lambda: answering.answer(["x"], gguf, max_tokens=0), ValueError, r"max_tokens must be a positive int",
               "answer-max-tokens")
    yield case(lambda: answering.answer(["x"], gguf, runtime="vllm"), ValueError, r"runtime must be one of", "answer-runtime")
    yield case(lambda: answering.answer(["x"], "/nonexistent/Modelfile"), answering.AnswerError,
               r"no Modelfile at /nonexistent/Modelfile", "answer-no-modelfile")
    for name in ("../x", "/tmp/x", ".hidden", "a b", "-x"):
        yield case(lambda n=name: export.to_gguf("/nonexistent", "/nonexistent/out", name=n), ValueError,
                   rf"^name '{re.escape(name)}' may hold only", f"to_gguf-name-{name!r}")
        yield case(lambda n=name: export.adapter_to_gguf("/x", "/y", "/z", name=n), ValueError, r"^name .* may hold only",
                   f"adapter_to_gguf-name-{name!r}")
    yield case(lambda: export.to_gguf("/nonexistent", "/tmp/out", types="f16"), ExportError,
               r"types must be a tuple .* string 'f16'", "to_gguf-types-a-string")
    yield case(lambda: export.to_gguf("/nonexistent", "/tmp/out", types=("q2",)), ExportError,
               r"unknown GGUF type\(s\) \['q2'\]", "to_gguf-types-unknown")
    yield case(lambda: export.to_gguf("/nonexistent", "/tmp/out"), ExportError,
               r"no merged model at /nonexistent \(config\.json missing\)", "to_gguf-no-model")
    for call, what in ((lambda: export.quantize("/nonexistent/m.gguf", "/tmp/q.gguf"), "quantize"),
                       (lambda: export.tensor_type_counts("/nonexistent/m.gguf"), "tensor_type_counts"),
                       (lambda: export.eos_token("/nonexistent/m.gguf"), "eos_token")):
        yield case(call, ExportError, r"no GGUF file at /nonexistent/m\.gguf", f"{what}-no-gguf")
    yield case(lambda: export.adapter_to_gguf("/nonexistent/lora", "/y", "/z"), ExportError,
               r"no LoRA adapter at /nonexistent/lora", "adapter_to_gguf-no-adapter")


CASES = [*serving_cases(), *protocol_cases(), *dataset_cases(), *training_cases(), *models_cases(), *artifacts_cases(), *prompt_cases(),
         *evaluate_cases(), *misc_cases()]


@pytest.fixture(autouse=True)
def _own_output_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SLIPCORE_OUTPUT_DIR", str(tmp_path / "outputs"))


@pytest.mark.parametrize("call, error, says", CASES)
def test_bad_input_gets_a_clear_error_naming_the_place(call, error, says):
    with pytest.raises(error) as raised:
        call()
    assert re.search(says, str(raised.value)), f"{type(raised.value).__name__}: {raised.value}"


def test_the_table_covers_the_entry_points():
    assert len(CASES) >= 190
