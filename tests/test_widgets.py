"""Slider defaults: the model's registry values, overridden by the environment."""

import pytest

from slipcore_nb.widgets import training_sliders


def test_defaults_come_from_the_model(monkeypatch):
    for name in ("SLIPCORE_MAX_STEPS", "SLIPCORE_LORA_RANK", "SLIPCORE_LR"):
        monkeypatch.delenv(name, raising=False)
    sliders = training_sliders(120, 16, 1e-3)
    assert sliders.values() == {"max_steps": 120, "lora_rank": 16, "learning_rate": pytest.approx(1e-3)}
    assert type(sliders.max_steps).__name__ == "IntSlider" and type(sliders.lora_rank).__name__ == "IntSlider"


def test_environment_overrides_and_next_cell_reads_value(monkeypatch):
    monkeypatch.setenv("SLIPCORE_MAX_STEPS", "7")
    monkeypatch.setenv("SLIPCORE_LORA_RANK", "8")
    monkeypatch.setenv("SLIPCORE_LR", "2e-4")
    sliders = training_sliders(120, 16, 1e-3)
    assert sliders.values() == {"max_steps": 7, "lora_rank": 8, "learning_rate": pytest.approx(2e-4)}
    sliders.max_steps.value = 30  # a user moving the slider
    assert sliders.values()["max_steps"] == 30
    assert len(sliders.box.children) == 3


@pytest.mark.parametrize("name, value, message", [
    ("SLIPCORE_MAX_STEPS", "lots", "SLIPCORE_MAX_STEPS='lots' is not a valid int"),
    ("SLIPCORE_LORA_RANK", "0", "must be at least 1"),
])
def test_bad_environment_values_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        training_sliders(120, 16, 1e-3)
