"""CPU capability detection: model name, cores, bf16 instructions, the machine record."""

from __future__ import annotations

import json

import pytest

from damcseg_core.train import hardware

SAPPHIRE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 2
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile
"""

SKYLAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse2 avx2 avx512f avx512bw
"""

ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16
"""


def test_model_name_and_flags_from_cpuinfo():
    assert hardware.cpu_model_name(SAPPHIRE) == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"amx_bf16", "avx512_bf16", "avx2"} <= hardware.cpu_flags(SAPPHIRE)
    assert "amx_bf16" not in hardware.cpu_flags(SKYLAKE)


def test_physical_cores_count_distinct_cores_not_hyperthreads():
    assert hardware.physical_cores(SAPPHIRE) == 2
    assert hardware.physical_cores(SKYLAKE) is None  # no core ids: unknown, not guessed


@pytest.mark.parametrize(
    ("cpuinfo", "amx", "avx", "fast"),
    [(SAPPHIRE, True, True, True), (ZEN4, False, True, True), (SKYLAKE, False, False, False)],
    ids=["amx", "avx512_bf16 only", "no bf16"],
)
def test_bf16_support_from_flags(cpuinfo, amx, avx, fast):
    rec = hardware.bf16_support(cpuinfo)
    assert (rec["amx_bf16"], rec["avx512_bf16"], rec["fast"]) == (amx, avx, fast)
    assert rec["source"] == "/proc/cpuinfo"
    assert hardware.bf16_is_fast(cpuinfo) is fast


def test_bf16_support_falls_back_to_torch_probes(monkeypatch):
    monkeypatch.setattr(hardware, "_torch_probe", lambda name: name == "_is_amx_tile_supported")
    rec = hardware.bf16_support("processor : 0\n")  # no flags line (e.g. some containers)
    assert rec["source"] == "torch"
    assert rec["amx_bf16"] and not rec["avx512_bf16"] and rec["fast"]


def test_cgroup_cpu_limit(tmp_path):
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert hardware.cgroup_cpu_limit(tmp_path) == 2.0
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert hardware.cgroup_cpu_limit(tmp_path) is None
    assert hardware.cgroup_cpu_limit(tmp_path / "absent") is None


def test_machine_record_is_json_and_names_the_machine():
    rec = hardware.machine_record()
    json.dumps(rec)
    assert rec["cpu_model"] and rec["cpu_model"] != ""
    assert rec["available_cpus"] >= 1
    assert rec["torch_threads"] >= 1
    assert set(rec["bf16"]) == {"amx_bf16", "avx512_bf16", "fast", "source", "torch_cpu_capability"}
    assert rec["device"] == "cpu"
