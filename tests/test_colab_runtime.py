"""How a Colab runtime is recognised (every other Colab module asks this first)."""

from __future__ import annotations

from slipcore_nb import colab_runtime


def test_colab_is_detected_by_either_variable():
    assert colab_runtime.in_colab({"COLAB_RELEASE_TAG": "x"}) and colab_runtime.in_colab({"COLAB_GPU": "0"})
    assert not colab_runtime.in_colab({"COLAB": "1", "JPY_PARENT_PID": "1"})
