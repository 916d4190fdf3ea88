"""Cross-modal attention: the project's bidirectional layer against the design source's module.

The design source's ``CrossModalAttention`` (two ``nn.MultiheadAttention(batch_first=True)`` + two
LayerNorms, called as written, so ``need_weights`` keeps its default True) is re-implemented below. Ours is
``mmvla.modules.fusion.cross_attention.CrossModalLayer`` for {vision, language} without the feed-forward
sub-layer (the fusion adds one): the same math, residual + LayerNorm each side, called as the fusion calls
it (all-True keep-masks, so the fully-masked-row guard runs too). Two variants of ours:

- ``ours``: ``MultiHeadAttention(impl="auto")``, which at these shapes folds the projections onto the
  short side (W_q and W_o onto the 20 text keys when vision attends to text; W_k and W_v when text
  attends to vision): exact re-association, about 2.7x fewer multiply-adds (see ``MultiHeadAttention``).
- ``ours_sdpa``: the same layer forced onto packed QKV/KV projections + ``F.scaled_dot_product_attention``.

The source's weights (with perturbed biases and LayerNorm parameters) are copied into ours and the outputs
and input gradients checked equal before anything is timed.

Shapes: B in {1, 8, 32}, 196 image tokens, 20 text tokens, d = 768, 8 heads. Forward is timed under
``torch.inference_mode()`` for both; forward+backward in training mode with a fixed upstream gradient.
Repeats are interleaved (source, ours, ours_sdpa, source, ...); medians are reported. Default threads.

    .venv/bin/python benchmarks/attention.py            # ~1-2 min on a laptop CPU
    .venv/bin/python benchmarks/attention.py --quick    # smoke run
Writes benchmarks/results/attention.json and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from mmvla.core.io import atomic_write_json
from mmvla.modules.attention import MultiHeadAttention
from mmvla.modules.fusion.cross_attention import CrossModalLayer

N_IMG, N_TXT, D, HEADS = 196, 20, 768, 8
RESULTS = Path(__file__).resolve().parent / "results" / "attention.json"


class SourceCrossModalAttention(nn.Module):
    """The design source's module, as written (seed lines 82-135)."""

    def __init__(self, d_model: int = 768, n_heads: int = 8) -> None:
        super().__init__()
        self.vision_to_text = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.text_to_vision = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.ln1 = nn.LayerNorm(d_model)
        self.ln2 = nn.LayerNorm(d_model)

    def forward(self, vision_features: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
        vision_attended, _ = self.vision_to_text(
            query=vision_features, key=text_features, value=text_features
        )
        vision_out = self.ln1(vision_features + vision_attended)
        text_attended, _ = self.text_to_vision(
            query=text_features, key=vision_features, value=vision_features
        )
        text_out = self.ln2(text_features + text_attended)
        return vision_out, text_out


def build_pair(seed: int = 0) -> tuple[SourceCrossModalAttention, CrossModalLayer]:
    """The source module with random weights (and LayerNorm affine), and ours with the same weights."""
    torch.manual_seed(seed)
    src = SourceCrossModalAttention(D, HEADS)
    with torch.no_grad():
        for p in src.parameters():  # non-trivial biases and LayerNorm parameters
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    ours = CrossModalLayer(("language", "vision"), D, HEADS)
    ours.attn["vision"].load_state_dict(src.vision_to_text.state_dict())
    ours.attn["language"].load_state_dict(src.text_to_vision.state_dict())
    ours.ln["vision"].load_state_dict(src.ln1.state_dict())
    ours.ln["language"].load_state_dict(src.ln2.state_dict())
    return src, ours


def variants(seed: int = 0) -> dict[str, nn.Module]:
    """name -> module: the source; ours as the fusion calls it (``impl="auto"``, which picks the folded
    projections at these shapes); ours forced onto plain projections + SDPA, to show what each part buys."""
    src, ours = build_pair(seed)
    ours_sdpa = copy.deepcopy(ours)
    for attn in ours_sdpa.modules():
        if isinstance(attn, MultiHeadAttention):
            attn.impl = "sdpa"
    return {"source": src, "ours": ours, "ours_sdpa": ours_sdpa}


def call(module: nn.Module, v: Tensor, t: Tensor, masks: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(vision_out, text_out) of any variant; ours gets all-True keep-masks, as the fusion passes them."""
    if isinstance(module, SourceCrossModalAttention):
        return module(v, t)
    out = module({"vision": v, "language": t}, masks)
    return out["vision"], out["language"]


def all_valid(B: int) -> dict[str, Tensor]:
    return {
        "vision": torch.ones(B, N_IMG, dtype=torch.bool),
        "language": torch.ones(B, N_TXT, dtype=torch.bool),
    }


def check_equal(B: int = 2) -> dict[str, float]:
    """Assert every variant gives the source's outputs and input gradients; return the max differences."""
    mods = variants()
    v, t = torch.randn(B, N_IMG, D, requires_grad=True), torch.randn(B, N_TXT, D, requires_grad=True)
    gv, gt = torch.randn(B, N_IMG, D), torch.randn(B, N_TXT, D)
    results = {}
    for name, module in mods.items():
        vo, to = call(module, v, t, all_valid(B))
        dv, dt = torch.autograd.grad((vo * gv).sum() + (to * gt).sum(), (v, t))
        results[name] = (vo.detach(), to.detach(), dv, dt)
    diffs = {}
    for name in ("ours", "ours_sdpa"):
        ref, got = results["source"], results[name]
        out_diff = max((a - b).abs().max().item() for a, b in zip(ref[:2], got[:2], strict=True))
        grad_rel = max(
            ((a - b).abs().max() / a.abs().max()).item() for a, b in zip(ref[2:], got[2:], strict=True)
        )
        if out_diff > 1e-5 or grad_rel > 1e-4:
            raise AssertionError(
                f"{name}: outputs differ by {out_diff:.2e}, input gradients by {grad_rel:.2e}"
            )
        diffs[f"{name}_max_abs_output_diff"] = out_diff
        diffs[f"{name}_max_rel_input_grad_diff"] = grad_rel
    return diffs


def time_mode(B: int, mode: str, repeats: int) -> dict[str, list[float]]:
    """Interleaved timings in seconds per call for every variant at batch B; mode 'forward' or 'forward_backward'."""
    mods = variants()
    v, t = torch.randn(B, N_IMG, D), torch.randn(B, N_TXT, D)
    gv, gt = torch.randn(B, N_IMG, D), torch.randn(B, N_TXT, D)
    masks = all_valid(B)

    def once(module: nn.Module) -> None:
        if mode == "forward":
            with torch.inference_mode():
                call(module, v, t, masks)
        else:
            module.zero_grad(set_to_none=True)
            vo, to = call(module, v, t, masks)
            ((vo * gv).sum() + (to * gt).sum()).backward()

    # Warm up, and pick an inner loop count so one sample lasts >= ~20 ms (less timer noise at B = 1).
    inner = 1
    for module in mods.values():
        once(module)
        t0 = time.perf_counter()
        once(module)
        inner = max(inner, min(20, int(0.02 / max(time.perf_counter() - t0, 1e-6)) + 1))
    samples: dict[str, list[float]] = {k: [] for k in mods}
    for _ in range(repeats):
        for name, module in mods.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                once(module)
            samples[name].append((time.perf_counter() - t0) / inner)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=0, help="samples per measurement (0 = by batch size)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    diffs = check_equal()
    print("equal results: " + ", ".join(f"{k}={v:.1e}" for k, v in diffs.items()))
    rows = []
    for B in args.batch_sizes:
        repeats = 3 if args.quick else args.repeats or (15 if B <= 8 else 7)
        for mode in ("forward", "forward_backward"):
            s = time_mode(B, mode, repeats)
            med = {k: statistics.median(v) for k, v in s.items()}
            rows.append(
                {
                    "batch": B,
                    "mode": mode,
                    "repeats": repeats,
                    "median_ms": {k: 1e3 * v for k, v in med.items()},
                    "min_ms": {k: 1e3 * min(v) for k, v in s.items()},
                    "speedup": {k: med["source"] / med[k] for k in med if k != "source"},
                }
            )
    result = {
        "benchmark": "cross-modal attention, design source (2x nn.MultiheadAttention + LayerNorm) vs mmvla CrossModalLayer",
        "shapes": {"image_tokens": N_IMG, "text_tokens": N_TXT, "dim": D, "heads": HEADS},
        "equality": diffs,
        "env": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "device": "cpu",
            "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "results": rows,
    }
    atomic_write_json(args.out, result)

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, CPU; median ms per call")
    print(f"{'B':>3} {'mode':<17} {'source':>9} {'ours':>9} {'ours_sdpa':>10} {'speedup':>8} {'(sdpa)':>8}")
    for r in rows:
        m, sp = r["median_ms"], r["speedup"]
        print(
            f"{r['batch']:>3} {r['mode']:<17} {m['source']:>9.2f} {m['ours']:>9.2f} {m['ours_sdpa']:>10.2f} "
            f"{sp['ours']:>7.2f}x {sp['ours_sdpa']:>7.2f}x"
        )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
