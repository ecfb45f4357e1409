"""The notebook sliders: training steps, LoRA rank, learning rate.

Sliders start at ``SLIPCORE_MAX_STEPS`` / ``SLIPCORE_LORA_RANK`` / ``SLIPCORE_LR`` when set (CI and
``make demo`` set them), otherwise at the model's registry defaults. The next cell reads ``.value``,
so a headless run and a user who never touches a slider train the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .environment import env_number

LR_RANGE = (1e-5, 1e-1)  # the learning-rate slider's ends; SLIPCORE_LR outside them is refused, not clamped

@dataclass
class TrainingSliders:
    """The three sliders; ``box`` is what the notebook displays."""

    max_steps: object
    lora_rank: object
    learning_rate: object

    @property
    def box(self):
        import ipywidgets as w

        return w.VBox([self.max_steps, self.lora_rank, self.learning_rate])

    def values(self) -> dict[str, float]:
        return {"max_steps": self.max_steps.value, "lora_rank": self.lora_rank.value,
                "learning_rate": self.learning_rate.value}


def training_sliders(default_steps: int, default_rank: int, default_lr: float) -> TrainingSliders:
    """Sliders for one model; environment variables override the model's defaults."""
    import ipywidgets as w

    steps = env_number("SLIPCORE_MAX_STEPS", default_steps, minimum=1)
    rank = env_number("SLIPCORE_LORA_RANK", default_rank, minimum=1)
    lr = env_number("SLIPCORE_LR", default_lr, float, minimum=LR_RANGE[0], maximum=LR_RANGE[1])
    style = {"description_width": "120px"}
    layout = w.Layout(width="480px")
    return TrainingSliders(
        max_steps=w.IntSlider(value=steps, min=1, max=max(2000, steps), step=1,
                              description="max steps", style=style, layout=layout),
        lora_rank=w.IntSlider(value=rank, min=1, max=max(64, rank), step=1, description="LoRA rank",
                              style=style, layout=layout),
        learning_rate=w.FloatLogSlider(value=lr, base=10, min=math.log10(LR_RANGE[0]), max=math.log10(LR_RANGE[1]),
                                       step=0.1,
                                       description="learning rate", readout_format=".1e",
                                       style=style, layout=layout),
    )
