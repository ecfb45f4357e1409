"""Role adapters: trained on one role's examples, and switched per request on one llama-server base."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from slipcore_nb import export, modelfile, role_adapters
from slipcore_nb.completions import CompletionsClient
from slipcore_nb.dataset import load_split
from slipcore_nb.evaluate import clean_answer
from slipcore_nb.llama_server import LlamaServer
from slipcore_nb.prompts import PROMPT
from slipcore_nb.tiny import build_tiny

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_request_fields_switch_on_exactly_one_adapter_without_the_prompt_cache():
    assert role_adapters.request_fields(["shared", "planner", "critic"], "planner") == {
        "lora": [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}, {"id": 2, "scale": 0.0}], "cache_prompt": False}
    with pytest.raises(ValueError, match="no adapter 'executor'"):
        role_adapters.request_fields(["shared", "planner"], "executor")


def test_role_examples_are_that_roles_answers_only():
    train = load_split("train")
    critic = role_adapters.role_examples(train, "critic")
    assert critic and all(ex["role"] == "critic" for ex in critic)
    assert sum(len(role_adapters.role_examples(train, r)) for r in ("coordinator", "planner", "executor", "critic")) \
        == len(train)
    with pytest.raises(ValueError, match="role must be one of"):
        role_adapters.role_examples(train, "janitor")


def test_a_role_adapter_trains_on_its_role(tmp_path):
    adapter, result = role_adapters.train("tiny", load_split("train"), "critic", tmp_path, max_steps=2)
    assert result.steps == 2 and (adapter / "adapter_config.json").is_file() and adapter.name == "critic"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny base GGUF and two random LoRA GGUFs on it (B not zero, so each visibly changes the model)."""
    out = tmp_path_factory.mktemp("roles")
    tiny = build_tiny()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    loras = {}
    for seed, name in enumerate(("planner", "critic")):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32),
                               LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False))
        adapter = export.save_adapter(model, tokenizer, out / name)
        loras[name] = export.adapter_to_gguf(adapter.path, tiny, out / "gguf", name=name).path
    base = export.to_gguf(tiny, out / "gguf", types=("f16",), name="base")["f16"].path
    return base, loras, out


def test_one_server_answers_with_the_adapter_each_request_chooses(served):
    base, loras, _ = served
    names = list(loras)
    prompts = [PROMPT.prompt(f"You are the planner agent (id {i}). Goal[{i}]: Add caching. Respond with nSLIP.")
               for i in range(3)]

    def answers(client, **fields):
        return [client.complete(p, max_tokens=12, **fields).text for p in prompts]

    with LlamaServer(base, parallel=2, ctx_per_slot=256, threads=2) as server, \
            CompletionsClient(server.base_url, extra={"cache_prompt": False}) as client:
        bare = answers(client)  # the base alone, no adapter loaded
    with LlamaServer(base, parallel=2, ctx_per_slot=256, threads=2, loras=tuple(loras.values())) as server, \
            CompletionsClient(server.base_url) as client:
        planner = answers(client, **role_adapters.request_fields(names, "planner"))
        critic = answers(client, **role_adapters.request_fields(names, "critic"))
        assert answers(client, cache_prompt=False) == bare  # loaded at scale 0: a request without lora = the base
        assert answers(client, **role_adapters.request_fields(names, "planner")) == planner  # switching back
    assert planner != bare and critic != bare and planner != critic


def test_ollama_gets_one_modelfile_per_role(served):
    base, loras, out = served
    recipes = role_adapters.write_modelfiles(base, loras, out / "ollama")
    for name, recipe in recipes.items():
        commands = dict(modelfile.parse_modelfile(recipe.modelfile.read_text()))
        assert commands["adapter"].endswith(f"{name}-lora-F16.gguf") and commands["from"].endswith("base-F16.gguf")
        assert recipe.model_name == f"slipcore-{name}"


def test_agents_send_each_role_with_its_adapter(served):
    from slipcore_nb import agents
    from slipcore_nb.dataset import held_out_goals

    base, loras, _ = served
    names = list(loras)
    adapter_of_role = {role: role_adapters.request_fields(names, "critic" if role == "critic" else "planner")
                       for role in ("coordinator", "planner", "executor", "critic")}
    with LlamaServer(base, parallel=2, ctx_per_slot=512, threads=2, loras=tuple(loras.values())) as server, \
            CompletionsClient(server.base_url) as client:
        run = agents.Agents(client, max_tokens=12, served_form=True, adapter_of_role=adapter_of_role).converse(
            0, held_out_goals()[0], seed=2)
        differs = 0
        for sent in run.messages[:4]:
            prompt = PROMPT.prompt(sent.instruction)
            own = adapter_of_role[sent.role]
            assert clean_answer(client.complete(prompt, max_tokens=12, **own).text) == sent.answer
            other = role_adapters.request_fields(names, "planner" if sent.role == "critic" else "critic")
            differs += clean_answer(client.complete(prompt, max_tokens=12, **other).text) != sent.answer
    assert differs  # the adapter each role was sent with made its answer
