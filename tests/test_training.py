"""Training on the real tiny model: exact TRL arguments, label masking, loss goes down, resume."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trl
from transformers import TrainerCallback

from slipcore_nb import loading, machine, registry, training
from slipcore_nb.dataset import load_split
from slipcore_nb.prompts import PROMPT

EXAMPLES = load_split("train")[:256]
CPU = machine.Hardware(cuda=False, gpu=None, cpu_cores=2, cpu_capability="AVX512")
H100 = machine.Hardware(cuda=True, gpu="NVIDIA H100", cpu_cores=16, cpu_capability="AVX512", gpu_bf16=True)
T4 = machine.Hardware(cuda=True, gpu="Tesla T4", cpu_cores=2, cpu_capability="AVX2", gpu_bf16=False)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def tiny_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLIPCORE_CACHE", str(tmp_path_factory.getbasetemp() / "slipcore-cache"))
    monkeypatch.delenv("SLIPCORE_BACKEND", raising=False)


def config(tmp_path, **kw):
    return training.TrainConfig.from_spec(registry.get_spec("tiny"), output_dir=tmp_path, **kw)


def test_config_from_sliders_and_registry(tmp_path):
    spec = registry.get_spec("tiny")
    default = training.TrainConfig.from_spec(spec, output_dir=tmp_path)
    assert (default.max_steps, default.learning_rate, default.lora_rank) == (spec.max_steps, spec.learning_rate, 16)
    moved = training.TrainConfig.from_spec(spec, max_steps=40, lora_rank=8, learning_rate=1e-3, output_dir=tmp_path)
    assert (moved.max_steps, moved.learning_rate, moved.lora_rank, moved.save_steps) == (40, 1e-3, 8, 40)
    assert moved.output_dir == tmp_path / "tiny"


@pytest.mark.parametrize("backend", ["unsloth", "transformers"])
def test_cpu_sft_config_is_accepted_by_installed_trl(tmp_path, backend):
    kwargs = training.sft_config_kwargs(config(tmp_path), backend, CPU)
    args = trl.SFTConfig(**kwargs)
    assert args.use_cpu and not args.fp16 and not args.gradient_checkpointing
    assert args.completion_only_loss and args.max_length == 512
    assert kwargs["optim"] == "adamw_torch"  # Unsloth, once imported, may swap in the fused variant
    if backend == "transformers":
        assert not args.bf16


@pytest.mark.parametrize("gpu, bf16", [(H100, True), (T4, False)])
def test_cuda_sft_config_names_real_fields(tmp_path, gpu, bf16):
    """SFTConfig refuses fp16 without a GPU, so on CPU check the CUDA keywords are real fields.

    A T4 gets fp16 although torch says it "supports" bf16 (by emulation): Unsloth's rule, capability >= 8.
    """
    kwargs = training.sft_config_kwargs(config(tmp_path), "unsloth", gpu)
    fields = {f.name for f in dataclasses.fields(trl.SFTConfig)}
    assert set(kwargs) <= fields
    assert kwargs["optim"] == "adamw_8bit" and (kwargs["bf16"], kwargs["fp16"]) == (bf16, not bf16)


def test_prompt_completion_rows_come_from_prompts():
    rows = training.prompt_completion_dataset(EXAMPLES[:2], "</s>")
    assert rows[0] == {"prompt": PROMPT.prompt(EXAMPLES[0]["input"]),
                       "completion": PROMPT.completion(EXAMPLES[0]["target"], "</s>")}


@pytest.fixture
def loaded():
    return loading.load_model("tiny")


def test_only_the_answer_is_trained_on(loaded, tmp_path):
    trainer = training.make_trainer(loaded, EXAMPLES[:8], config(tmp_path, max_steps=1))
    view = training.masked_example(trainer, index=3)
    assert view.masked_text == "<s>" + PROMPT.prompt(EXAMPLES[3]["input"])
    assert view.trained_text == EXAMPLES[3]["target"] + "</s>"
    assert view.masked_tokens > view.trained_tokens > 10
    assert "not trained on" in str(view)


def _assert_learns(losses):
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


def test_short_training_lowers_the_loss_through_unsloth(tmp_path):
    loaded = loading.load_model("tiny")
    assert loaded.backend == "unsloth"
    cfg = config(tmp_path, max_steps=30)
    result = training.train(training.make_trainer(loaded, EXAMPLES, cfg), training.start_run(cfg, EXAMPLES))
    assert result.steps == 30 and not result.interrupted
    _assert_learns([loss for _, loss in result.loss_history])


def test_loraplus_trains_the_b_matrices_at_its_ratio_of_the_learning_rate(loaded, tmp_path):
    cfg = config(tmp_path, max_steps=1, loraplus_lr_ratio=4.0)
    optimizer, scheduler = training.optimizers(loaded.model, cfg)
    assert scheduler is None  # the trainer makes the linear schedule from its config
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    names = {name: rate[id(p)] for name, p in loaded.model.named_parameters() if p.requires_grad}
    assert {lr for name, lr in names.items() if ".lora_B." in name} == {4.0 * cfg.learning_rate}
    assert {lr for name, lr in names.items() if ".lora_A." in name} == {cfg.learning_rate}
    assert training.optimizers(loaded.model, config(tmp_path)) == (None, None)
    trainer = training.make_trainer(loaded, EXAMPLES[:8], cfg)
    assert {group["lr"] for group in trainer.optimizer.param_groups if group["params"]} == {
        cfg.learning_rate, 4.0 * cfg.learning_rate}  # the trainer took the LoRA+ optimizer, not its own AdamW


def test_bf16_cpu_training_uses_the_math_attention_kernel_and_restores_the_choice(loaded):
    """A bf16 model on a CPU trains with the math kernel (the flash kernel's bf16 backward is slow there);
    fp32 keeps PyTorch's choice, and leaving the context restores it."""
    import torch

    bf16 = torch.nn.Linear(4, 4).to(torch.bfloat16)
    assert torch.backends.cuda.flash_sdp_enabled()
    with training.attention_kernel(bf16):
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled()
    assert next(loaded.model.parameters()).dtype == torch.float32  # the tiny model
    with training.attention_kernel(loaded.model):
        assert torch.backends.cuda.flash_sdp_enabled()
    with training.attention_kernel(loaded.model, "math"):
        assert not torch.backends.cuda.flash_sdp_enabled()
    with pytest.raises(ValueError, match="attention kernel"):
        with training.attention_kernel(loaded.model, "flash"):
            pass


def test_bf16_cpu_training_skips_the_lora_input_round_trip_and_computes_the_same(loaded):
    """Under bf16 autocast peft's cast of each LoRA input to fp32 is undone by autocast at once: skipping it
    removes copies and changes no output. Without autocast (an evaluation inside a training callback) the
    cast stays, and an fp32 model gets no hooks at all."""
    import peft
    import torch

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(64, 64)).to(torch.bfloat16)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["0"], init_lora_weights=False))
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    x = torch.randn(32, 64, dtype=torch.bfloat16)

    def forward_counting_copies():
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.profiler.profile() as prof:
            out = model(x)
        return out, sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")

    cast_out, cast_copies = forward_counting_copies()
    plain = model(x)  # no autocast: peft's cast is what makes the fp32 adapter take a bf16 input
    with training.skip_lora_input_cast(model):
        skip_out, skip_copies = forward_counting_copies()
        assert torch.equal(model(x), plain)
    assert torch.equal(cast_out, skip_out) and skip_copies < cast_copies
    assert forward_counting_copies()[1] == cast_copies  # leaving the context restores peft's cast
    hooks = sum(len(m._forward_pre_hooks) for m in loaded.model.modules())
    with training.skip_lora_input_cast(loaded.model):  # the tiny model is fp32
        assert sum(len(m._forward_pre_hooks) for m in loaded.model.modules()) == hooks


TRANSFORMERS_ONLY = """
import sys
from slipcore_nb import loading, training
from slipcore_nb.dataset import load_split
loaded = loading.load_model("tiny", backend="transformers")
config = training.TrainConfig.from_spec(loaded.spec, max_steps=30, output_dir=sys.argv[1])
examples = load_split("train")[:256]
result = training.train(training.make_trainer(loaded, examples, config), training.start_run(config, examples))
assert "unsloth" not in sys.modules  # stock TRL, not the classes Unsloth patches on import
print(result.steps, *[loss for _, loss in result.loss_history])
"""


def test_short_training_lowers_the_loss_with_plain_trl(tmp_path):
    """In its own process: importing Unsloth patches TRL for the whole process, so this one never does."""
    done = subprocess.run([sys.executable, "-c", TRANSFORMERS_ONLY, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "SLIPCORE_BACKEND": "transformers"}, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    steps, *losses = done.stdout.splitlines()[-1].split()
    assert int(steps) == 30
    _assert_learns([float(x) for x in losses])


class StopAt(TrainerCallback):
    """Stands in for the notebook's stop button: a KeyboardInterrupt in the middle of training."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    cfg = config(tmp_path, max_steps=8, save_steps=3)
    straight = training.train(training.make_trainer(loading.load_model("tiny"), EXAMPLES, cfg),
                              training.start_run(cfg, EXAMPLES))

    stopped = training.train(training.make_trainer(loading.load_model("tiny"), EXAMPLES, cfg, callbacks=(StopAt(5),)),
                             training.start_run(cfg, EXAMPLES, fresh=True))
    assert stopped.interrupted and training.last_checkpoint(cfg.output_dir).endswith("checkpoint-3")

    start = training.start_run(cfg, EXAMPLES)
    assert start.checkpoint.endswith("checkpoint-3") and "5 steps to go" in start.reason
    resumed = training.train(training.make_trainer(loading.load_model("tiny"), EXAMPLES, cfg), start)
    assert resumed.resumed_from.endswith("checkpoint-3") and resumed.steps == 8
    assert [step for step, _ in resumed.loss_history] == list(range(1, 9))
    # Same data order and weights as the uninterrupted run: the same losses.
    assert [loss for _, loss in resumed.loss_history] == pytest.approx(
        [loss for _, loss in straight.loss_history], rel=1e-3
    )


def test_a_moved_slider_trains_a_fresh_run_and_the_same_settings_resume(tmp_path):
    """The trap: 8 steps trained, the steps slider moved to 6, run again. Resuming checkpoint-8 would
    train nothing and show the old model; a fresh run trains the 6 steps asked for."""
    first = config(tmp_path, max_steps=8, save_steps=4)
    training.train(training.make_trainer(loading.load_model("tiny"), EXAMPLES, first), training.start_run(first, EXAMPLES))

    again = training.start_run(first, EXAMPLES)
    assert again.checkpoint.endswith("checkpoint-8") and "nothing left to train" in again.reason

    fewer = config(tmp_path, max_steps=6, save_steps=4)
    start = training.start_run(fewer, EXAMPLES)
    assert start.checkpoint is None and "max_steps 8 -> 6" in start.reason
    assert training.last_checkpoint(fewer.output_dir) is None  # the old run's checkpoints are gone
    result = training.train(training.make_trainer(loading.load_model("tiny"), EXAMPLES, fewer), start)
    assert result.steps == 6 and [step for step, _ in result.loss_history] == list(range(1, 7))

    other_data = training.start_run(fewer, EXAMPLES[:100])
    assert other_data.checkpoint is None and "data_sha256" in other_data.reason
    moved_lr = training.start_run(config(tmp_path, max_steps=6, save_steps=4, learning_rate=1e-4), EXAMPLES[:100])
    assert moved_lr.checkpoint is None and "learning_rate" in moved_lr.reason


def test_checkpoints_go_under_the_output_dir_whatever_the_working_directory(tmp_path, monkeypatch):
    """Notebooks run with notebooks/ as working directory; checkpoints must still land in outputs/."""
    monkeypatch.setenv("SLIPCORE_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.chdir(tmp_path)
    config = training.TrainConfig.from_spec(registry.get_spec("tiny"), lora_rank=8)
    assert config.output_dir == (tmp_path / "out" / "checkpoints" / "tiny").resolve()


def test_script_leaves_what_notebooks_04_and_05_read(tmp_path):
    """scripts/train.py stands in for notebooks 01-03: same artifacts, same metrics record."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--model", "tiny", "--max-steps", "6",
         "--eval-limit", "4", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "model.json").read_text())["name"] == "tiny"
    assert (out / "lora" / "adapter_config.json").is_file()
    assert (out / "checkpoints" / "tiny" / training.RUN_RECORD).is_file()
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["eval_examples"] == 4 and len(metrics["loss_history"]) == 6
    assert set(metrics["after"]) == set(metrics["before"]) >= {"valid", "protocol_correct"}
