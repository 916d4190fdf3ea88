"""Proprioception encoder: robot state (B, S) -> one token (B, 1, D)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class ProprioConfig:
    """Hyper-parameters of :class:`ProprioEncoder`.

    Attributes:
        state_dim: S, the length of the (normalised) robot state vector.
        dim: output token width D.
        hidden_dim: width of the hidden layers.
        num_layers: linear layers in the MLP (>= 1; 1 = a single linear map).
        dropout: dropout after each hidden activation.
    """

    state_dim: int
    dim: int = 128
    hidden_dim: int = 128
    num_layers: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("state_dim", "dim", "hidden_dim", "num_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ProprioConfig: {name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ProprioConfig: dropout must be in [0, 1), got {self.dropout}")


class ProprioEncoder(nn.Module):
    """MLP ``Linear → GELU → … → Linear → LayerNorm`` mapping the state to one token.

    Inputs:
        state: (B, S) float, normalised with the dataset statistics.
    Returns:
        (B, 1, D) token.
    """

    def __init__(self, cfg: ProprioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        width = cfg.state_dim
        for _ in range(cfg.num_layers - 1):
            layers += [nn.Linear(width, cfg.hidden_dim), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden_dim
        layers += [nn.Linear(width, cfg.dim), nn.LayerNorm(cfg.dim)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, state: Tensor) -> Tensor:
        if state.dim() != 2 or state.shape[1] != self.cfg.state_dim:
            raise ValueError(
                f"ProprioEncoder: state must be (B, {self.cfg.state_dim}), got {tuple(state.shape)}"
            )
        return self.mlp(state)[:, None, :]  # (B, 1, D)
