"""The benchmarks' busy-machine check: CPU of other processes, not of the benchmark and its children."""

import os
import subprocess
import sys
import time

import pytest

from benchmarks import common

SPIN = "import time\nend = time.time() + 1.5\nwhile time.time() < end:\n    pass\n"


@pytest.mark.skipif(common._cpu_seconds() is None, reason="needs /proc/stat (Linux)")
def test_a_child_counts_as_another_process_until_it_is_reaped():
    start = common._cpu_seconds()
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    time.sleep(2.5)  # the child has spun and exited, but nobody waited for it yet
    unreaped = common.other_processes_cores(start) * (time.monotonic() - start[0])
    _, status, usage = os.wait4(spinner.pid, 0)
    spinner.returncode = os.waitstatus_to_exitcode(status)
    reaped = common.other_processes_cores(start) * (time.monotonic() - start[0])
    child_cpu = usage.ru_utime + usage.ru_stime
    assert child_cpu > 0.1, child_cpu
    # Once reaped, the child's CPU seconds move from "other processes" to "this benchmark".
    assert unreaped - reaped == pytest.approx(child_cpu, abs=0.15), (unreaped, reaped, child_cpu)


def test_footer_warns_only_when_others_competed():
    data = {"machine": "m", "packages": {}, "date": "2026-01-01", "command": "c", "cpu_count": 2}
    assert "Warning" not in common.footer({**data, "other_processes_cores": 0.05})
    assert "1.2 of 2 cores" in common.footer({**data, "other_processes_cores": 1.2})


def test_cpu_description_names_the_model_and_the_flags_that_set_training_speed():
    from slipcore_nb.machine import Hardware, cpu_description, cpu_has_bf16

    amx = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    zen = "model name\t: AMD EPYC 7551 32-Core Processor\nflags\t\t: fpu sse2 avx2\n"
    assert cpu_description(amx) == "Intel(R) Xeon(R) Processor (avx2, avx512f, avx512_bf16, amx_bf16)"
    assert cpu_description(zen) == "AMD EPYC 7551 32-Core Processor (avx2)"
    assert "none of" in cpu_description("model name : Some CPU\nflags : fpu\n")
    assert cpu_description("") is None
    assert cpu_has_bf16(amx) and not cpu_has_bf16(zen) and not cpu_has_bf16("")
    xeon = Hardware(cuda=False, gpu=None, cpu_cores=2, cpu_capability="AVX512", cpu=cpu_description(amx))
    assert xeon.describe() == ("no CUDA GPU; CPU with 2 cores (AVX512): "
                               "Intel(R) Xeon(R) Processor (avx2, avx512f, avx512_bf16, amx_bf16)")
    data = {"machine": xeon.describe(), "packages": {}, "date": "2026-01-01", "command": "c"}
    assert f"_{xeon.describe()}; torch" in common.footer(data)
