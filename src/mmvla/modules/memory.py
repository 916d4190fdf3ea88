"""Temporal context: a per-episode memory of the last K fused features, read by an LSTM or causal attention.

::

    training:  history (B, K, D) + valid (B, K) ─► read ─► (B, D)     windows from the dataset
    rollout:   x_t (B, D), episode_start (B,) ─► step ─► (B, D)       the memory builds the same window

    window of row b: [x_{t-K+1}, ..., x_t], oldest first; entries before the episode start are invalid
    lstm reader:      LSTM cells over the window, state updated only at valid entries; output h after x_t
    attention reader: + position-from-end embedding ─► causal pre-norm blocks (key mask = valid) ─► LN,
                      output at the last position

The design source kept one Python list for the whole batch (rows saw each other's history) and never
reset it. Here each batch row has its own window, an episode start clears exactly that row, and
``step`` is ``read`` on the window the memory keeps, so rollouts see what training saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmvla.modules.attention import TransformerBlock

READERS = ("lstm", "attention")


@dataclass
class MemoryConfig:
    """Temporal memory hyper-parameters.

    Attributes:
        dim: width D of the fused features stored and returned.
        context: K, steps in the window (the current step included).
        reader: ``"lstm"`` or ``"attention"`` (causal attention over the window).
        num_layers: stacked LSTM cells or attention blocks.
        num_heads: attention heads (attention reader); must divide ``dim``.
        mlp_ratio: feed-forward width of attention blocks as a multiple of ``dim``.
        dropout: dropout probability inside the reader.
        history_grad: training only: True, the past frames of a window are fused with gradient, so the
            encoders learn what the memory needs from them; False, they are fused without it (the
            rollout's window is stored detached too) and only the current frame trains the encoders: a
            step then costs about (K + 2)/3 memoryless steps instead of K (a backward pass counted as two
            forwards).
    """

    dim: int = 128
    context: int = 8
    reader: str = "lstm"
    num_layers: int = 1
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    history_grad: bool = True

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise ValueError(f"MemoryConfig.reader must be one of {READERS}, got {self.reader!r}")
        if self.dim <= 0 or self.context < 1 or self.num_layers < 1:
            raise ValueError(
                f"MemoryConfig: need dim > 0, context >= 1, num_layers >= 1; got "
                f"{self.dim}, {self.context}, {self.num_layers}"
            )
        if self.reader == "attention" and (self.num_heads <= 0 or self.dim % self.num_heads):
            raise ValueError(f"MemoryConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MemoryConfig.dropout must be in [0, 1), got {self.dropout}")


class TemporalMemory(nn.Module):
    """Per-row memory of the last ``cfg.context`` features with a learned reader; see module docstring.

    State (``step``) is kept outside the parameters and not saved; stored features are detached, the
    current step keeps its gradient.
    """

    def __init__(self, cfg: MemoryConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D, K = cfg.dim, cfg.context
        if cfg.reader == "lstm":
            self.cells = nn.ModuleList(nn.LSTMCell(D, D) for _ in range(cfg.num_layers))
        else:
            self.pos = nn.Parameter(torch.randn(K, D) * 0.02)  # index 0 = oldest, K - 1 = current
            self.blocks = nn.ModuleList(
                TransformerBlock(D, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
                for _ in range(cfg.num_layers)
            )
            self.ln_f = nn.LayerNorm(D)
        self.drop = nn.Dropout(cfg.dropout)
        self.history: Tensor | None = None  # (B, K, D) rollout window, oldest first
        self.valid: Tensor | None = None  # (B, K) bool

    # ------------------------------------------------------------------ functional reader (training)
    def read(self, history: Tensor, valid: Tensor) -> Tensor:
        """Read a window of features.

        Args:
            history: (B, K', D) features oldest first, K' <= cfg.context; the last entry is the current step.
            valid: (B, K') bool, True = a real step of this episode (False = before the episode start).
        Returns:
            (B, D) context feature. Invalid entries never influence it; a row with no valid entry gives a
            finite output (zeros for the LSTM reader).
        """
        B, K, D = history.shape
        if self.cfg.dim != D or not 1 <= K <= self.cfg.context:
            raise ValueError(
                f"history must be (B, K<={self.cfg.context}, {self.cfg.dim}), got {tuple(history.shape)}"
            )
        if valid.dtype != torch.bool or tuple(valid.shape) != (B, K):
            raise ValueError(f"valid must be bool ({B}, {K}), got {valid.dtype} {tuple(valid.shape)}")
        x = self.drop(history)
        if self.cfg.reader == "lstm":
            return self._read_lstm(x, valid)
        return self._read_attention(x, valid)

    def _read_lstm(self, x: Tensor, valid: Tensor) -> Tensor:
        """(B, K, D), (B, K) -> (B, D): top cell's hidden state after the last valid step."""
        B, K, D = x.shape
        state = [(x.new_zeros(B, D), x.new_zeros(B, D)) for _ in self.cells]
        for t in range(K):
            inp, keep = x[:, t], valid[:, t, None]  # (B, D), (B, 1)
            for i, cell in enumerate(self.cells):
                h, c = cell(inp, state[i])
                state[i] = (torch.where(keep, h, state[i][0]), torch.where(keep, c, state[i][1]))
                inp = state[i][0]
        return state[-1][0]

    def _read_attention(self, x: Tensor, valid: Tensor) -> Tensor:
        """(B, K, D), (B, K) -> (B, D): causal blocks, output at the last position."""
        K = x.shape[1]
        h = x + self.pos[self.cfg.context - K :]  # positions counted from the end, (B, K, D)
        causal = torch.ones(K, K, dtype=torch.bool, device=x.device).tril()  # (K, K)
        mask = causal[None] & valid[:, None, :]  # (B, K, K)
        for block in self.blocks:
            h = block(h, attn_mask=mask)
        return self.ln_f(h[:, -1])

    # ------------------------------------------------------------------ stateful rollout
    def reset(self, rows: Tensor | None = None) -> None:
        """Forget everything (``rows`` None) or the rows where ``rows`` (B,) bool is True."""
        if rows is None or self.history is None or self.valid is None:
            self.history = self.valid = None
            return
        self.valid = self.valid & ~rows[:, None]
        self.history = self.history * self.valid[..., None]

    def step(self, x: Tensor, episode_start: Tensor) -> Tensor:
        """Append the current features and read the window.

        Args:
            x: (B, D) fused features of the current step.
            episode_start: (B,) bool, True where this step is the first of a new episode (clears that row).
        Returns:
            (B, D), identical to ``read`` on the window this row has seen since its episode started.
        """
        B, D = x.shape
        K = self.cfg.context
        if episode_start.dtype != torch.bool or tuple(episode_start.shape) != (B,):
            raise ValueError(
                f"episode_start must be bool ({B},), got {episode_start.dtype} {tuple(episode_start.shape)}"
            )
        if self.history is None or self.valid is None:
            self.history = x.new_zeros(B, K, D)
            self.valid = torch.zeros(B, K, dtype=torch.bool, device=x.device)
        elif self.history.shape[0] != B:
            raise ValueError(f"memory holds {self.history.shape[0]} rows, got {B}; call reset() first")
        self.reset(episode_start.to(self.valid.device))
        hist, valid = self.history.to(x), self.valid.to(x.device)
        window = torch.cat([hist[:, 1:], x[:, None]], dim=1)  # (B, K, D), current step keeps its grad
        valid = torch.cat([valid[:, 1:], valid.new_ones(B, 1)], dim=1)  # (B, K)
        self.history, self.valid = window.detach(), valid
        return self.read(window, valid)
