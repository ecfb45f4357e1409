"""benchmarks.quantization's recommendation: the smallest file within 2 protocol-correct points of f16."""

from benchmarks.quantization import recommend


def rows(**files):
    return {name: {"megabytes": mb, "protocol_correct": pc} for name, (mb, pc) in files.items()}


def test_the_smallest_file_that_keeps_the_protocol_wins():
    assert recommend(rows(F16=(270, 40.0), Q8_0=(145, 39.0), Q4_K_M=(105, 30.0))) == "Q8_0"
    assert recommend(rows(F16=(270, 40.0), Q8_0=(145, 38.0), Q4_0=(80, 38.5))) == "Q4_0"  # 2 points is still in


def test_f16_when_every_smaller_file_loses_more():
    assert recommend(rows(F16=(270, 40.0), Q8_0=(145, 37.9), Q4_K_M=(105, 20.0))) == "F16"
