"""benchmarks/policy.py's FLOP accounting: FLOP/cycle per micro-architecture and the sgemm ceiling.

References are independent of the code: published FMA widths (AMD's Zen 4 splits a 512-bit FMA into
two 256-bit halves; Zen 5 and Intel server cores execute it whole on two pipes), peaks worked out by
hand, and a fake clock whose intervals give a known median.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace

import pytest
import torch
from script_modules import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/policy.py", "bench_policy")


# vendor, cpu family, flags -> fp32 FLOP/cycle/core (2 FLOP per FMA x lanes x 2 FMA pipes)
CASES = [
    ("AuthenticAMD", 25, "fma avx2 avx512f avx512bw", 32),  # Zen 4: 2 x 8 x 2 (512-bit ops double-pumped)
    ("AuthenticAMD", 25, "fma avx2", 32),  # Zen 3 (same family, no AVX-512): 2 x 8 x 2
    ("AuthenticAMD", 26, "fma avx2 avx512f", 64),  # Zen 5: full 512-bit datapath, 2 x 16 x 2
    ("GenuineIntel", 6, "fma avx2 avx512f", 64),  # Skylake-SP and later servers: 2 x 16 x 2
    ("GenuineIntel", 6, "fma avx2", 32),  # Haswell..Comet Lake: 2 x 8 x 2
]


@pytest.mark.parametrize(("vendor", "family", "flags", "expected"), CASES)
def test_fp32_flop_per_cycle(bench: ModuleType, vendor: str, family: int, flags: str, expected: int) -> None:
    flop, basis = bench.fp32_flop_per_cycle(vendor, family, flags.split())
    assert flop == expected, basis


ZEN4_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9454P 48-Core Processor
cpu MHz\t\t: 2445.406
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl
"""


def test_zen4_peak_is_32_flop_per_cycle(bench: ModuleType) -> None:
    peak = bench.cpu_fp32_peak(2, cpuinfo=ZEN4_CPUINFO)
    # by hand: 2 cores x 2445.406e6 cycles/s x 32 FLOP/cycle = 156.505984 GFLOP/s (not 313.0 at 64)
    assert peak["flop_per_cycle"] == 32 and peak["mhz"] == 2445.406
    assert peak["peak_flops"] == pytest.approx(156.505984e9, rel=1e-12)
    assert peak["simd"] == "avx512"


def test_sgemm_ceiling_is_2n3_over_the_median_time(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Timed intervals 0.5, 0.1, 0.3, 0.2, 0.9 s: median 0.3 s (mean 0.4, min 0.1 would differ).
    stamps = iter(
        [t for t0, dt in [(0, 0.5), (10, 0.1), (20, 0.3), (30, 0.2), (40, 0.9)] for t in (t0, t0 + dt)]
    )
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: next(stamps)))
    calls: list[tuple[int, ...]] = []
    real_mm = torch.mm

    def mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        calls.append((*a.shape, *b.shape, torch.get_num_threads()))
        return real_mm(a, b, out=out)

    monkeypatch.setattr(bench.torch, "mm", mm)
    before = torch.get_num_threads()
    try:
        res = bench.sgemm_ceiling(1, n=64, reps=5)
    finally:
        torch.set_num_threads(before)
    assert calls == [(64, 64, 64, 64, 1)] * 6  # one warm-up + 5 timed, (n, n) @ (n, n), on the given threads
    assert res["seconds_median"] == pytest.approx(0.3)
    assert res["flops"] == pytest.approx(2 * 64**3 / 0.3)  # 1,747,626.67 FLOP/s
    assert res["flops"] == pytest.approx(1_747_626.666, rel=1e-6)
