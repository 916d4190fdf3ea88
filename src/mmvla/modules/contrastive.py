"""CLIP-style contrastive alignment: symmetric InfoNCE, learnable temperature, alignment metrics.

- :func:`info_nce`: the loss as a pure function (fp32 similarities, multi-positive targets when several
  rows share one instruction).
- :class:`ContrastiveHead`: optional projections + the learnable log logit scale (init ``log(1/0.07)``),
  with :meth:`ContrastiveHead.clamp_` to call after every optimiser step (scale ≤ 100).
- :func:`param_groups`: AdamW groups without weight decay on the logit scale and on 1-D parameters.
- :func:`alignment_metrics`: matched / mean cosine similarity, recall@k both directions.
- :func:`modality_gap`: Liang et al. (2022) centroid gap + the design source's gap-to-variance ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------------


def positive_targets(groups: Tensor) -> Tensor:
    """Soft targets for multi-positive InfoNCE.

    Args:
        groups: (B,) integer group ids; rows with the same id are positives of each other (e.g. the
            same instruction).
    Returns:
        (B, B) float32, row ``i`` uniform over ``{j : groups[j] == groups[i]}`` (rows sum to 1).
    """
    if groups.dim() != 1:
        raise ValueError(f"positive_targets: groups must be (B,), got {tuple(groups.shape)}")
    pos = (groups[:, None] == groups[None, :]).float()  # (B, B)
    return pos / pos.sum(dim=1, keepdim=True)


def info_nce(
    img_emb: Tensor, txt_emb: Tensor, logit_scale: Tensor | float, targets: Tensor | None = None
) -> Tensor:
    """Symmetric InfoNCE (CLIP loss) between paired image and text embeddings.

    Embeddings are L2-normalised here and similarities computed in float32 whatever the input dtype::

        logits = logit_scale · norm(img) @ norm(txt)ᵀ                       (B, B)
        loss   = ½ [ CE(logits, T) + CE(logitsᵀ, Tᵀ) ],   CE(z, T) = −1/B Σ_i Σ_j T_ij log softmax_j(z_i)

    with ``T = I`` (row ``i`` pairs with column ``i``) or, given group ids, ``T_ij = [g_i = g_j] / n_i``
    (soft targets spread uniformly over every row sharing the instruction).

    Args:
        img_emb: (B, E) image embeddings.
        txt_emb: (B, E) text embeddings, row ``i`` paired with image ``i``.
        logit_scale: the multiplier ``exp(log_scale)`` (≈ 1 / temperature), scalar tensor or float.
        targets: optional (B,) integer group ids for multi-positive targets.
    Returns:
        scalar float32 loss.
    """
    if img_emb.dim() != 2 or img_emb.shape != txt_emb.shape:
        raise ValueError(
            f"info_nce: embeddings must both be (B, E), got {tuple(img_emb.shape)} and {tuple(txt_emb.shape)}"
        )
    img = F.normalize(img_emb.float(), dim=-1)
    txt = F.normalize(txt_emb.float(), dim=-1)
    scale = logit_scale.float() if isinstance(logit_scale, Tensor) else logit_scale
    logits = scale * img @ txt.T  # (B, B) image -> text
    if targets is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    if targets.shape != (logits.shape[0],):
        raise ValueError(f"info_nce: targets must be (B,) group ids, got {tuple(targets.shape)}")
    t = positive_targets(targets.to(logits.device))  # (B, B), symmetric positives
    loss_i2t = -(t * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_t2i = -(t.T * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i2t + loss_t2i)


# ---------------------------------------------------------------------------------------------------
# Module holding the temperature
# ---------------------------------------------------------------------------------------------------


@dataclass
class ContrastiveConfig:
    """Hyper-parameters of :class:`ContrastiveHead`.

    Attributes:
        embed_dim: E, width of the shared embedding space.
        vision_dim: input width of the vision features; ``None`` = no projection (already E wide).
        text_dim: input width of the text features; ``None`` = no projection.
        init_temperature: initial temperature τ; the learnable ``log_scale`` starts at ``log(1/τ)``.
        max_logit_scale: upper bound of ``exp(log_scale)`` enforced by :meth:`ContrastiveHead.clamp_`.
    """

    embed_dim: int = 128
    vision_dim: int | None = None
    text_dim: int | None = None
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.embed_dim <= 0:
            raise ValueError(f"ContrastiveConfig: embed_dim must be positive, got {self.embed_dim}")
        for name in ("vision_dim", "text_dim"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"ContrastiveConfig: {name} must be positive or None, got {v}")
        if not self.init_temperature > 0:
            raise ValueError(f"ContrastiveConfig: init_temperature must be > 0, got {self.init_temperature}")
        if not self.max_logit_scale >= 1.0:
            raise ValueError(f"ContrastiveConfig: max_logit_scale must be >= 1, got {self.max_logit_scale}")
        if 1.0 / self.init_temperature > self.max_logit_scale:
            raise ValueError(
                f"ContrastiveConfig: 1/init_temperature = {1 / self.init_temperature:.3g} exceeds "
                f"max_logit_scale = {self.max_logit_scale}"
            )


@dataclass
class ContrastiveOutput:
    """Result of :meth:`ContrastiveHead.forward`.

    Attributes:
        loss: scalar InfoNCE loss.
        img_emb: (B, E) L2-normalised image embeddings.
        txt_emb: (B, E) L2-normalised text embeddings.
        logit_scale: scalar ``exp(log_scale)`` (detached), for logging.
    """

    loss: Tensor
    img_emb: Tensor
    txt_emb: Tensor
    logit_scale: Tensor


class ContrastiveHead(nn.Module):
    """Projection heads (optional) + learnable log logit scale; loss via :func:`info_nce`.

    Call :meth:`clamp_` after each optimiser step, and build the optimiser with :func:`param_groups` so
    the scale gets no weight decay.

    Inputs:
        vision: (B, vision_dim) pooled vision features; text: (B, text_dim) pooled text features;
        groups: optional (B,) group ids (rows with the same instruction).
    """

    def __init__(self, cfg: ContrastiveConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_proj: nn.Module = (
            nn.Linear(cfg.vision_dim, cfg.embed_dim) if cfg.vision_dim is not None else nn.Identity()
        )
        self.text_proj: nn.Module = (
            nn.Linear(cfg.text_dim, cfg.embed_dim) if cfg.text_dim is not None else nn.Identity()
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    @property
    def scale(self) -> Tensor:
        """``exp(logit_scale)``, the multiplier of the cosine similarities (differentiable)."""
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep ``exp(logit_scale)`` in ``[1, max_logit_scale]`` (call after every optimiser step)."""
        self.logit_scale.clamp_(0.0, math.log(self.cfg.max_logit_scale))

    def embed(self, vision: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Project and L2-normalise: (B, Dv), (B, Dt) -> (B, E), (B, E)."""
        return F.normalize(self.vision_proj(vision), dim=-1), F.normalize(self.text_proj(text), dim=-1)

    def forward(self, vision: Tensor, text: Tensor, groups: Tensor | None = None) -> ContrastiveOutput:
        img, txt = self.embed(vision, text)
        loss = info_nce(img, txt, self.scale, groups)
        return ContrastiveOutput(loss=loss, img_emb=img, txt_emb=txt, logit_scale=self.scale.detach())


def param_groups(
    model: nn.Module, weight_decay: float, no_decay_names: Sequence[str] = ("logit_scale",)
) -> list[dict[str, object]]:
    """AdamW parameter groups: decay on weight matrices, none on 1-D params and the logit scale.

    A parameter goes to the no-decay group when it has fewer than 2 dimensions (biases, norms, scalar
    scales) or its name contains one of ``no_decay_names``. Frozen parameters are left out.

    Returns:
        ``[{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]``.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or any(n in name for n in no_decay_names):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------


def retrieval_recall(
    similarity: Tensor, groups: Tensor | None = None, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@k of retrieving, for each query row, a positive column among the top k.

    Args:
        similarity: (Q, C) scores, query ``i`` paired with column ``i`` (Q == C).
        groups: optional (C,) group ids: column ``j`` is a positive of row ``i`` when
            ``groups[j] == groups[i]``; a hit if *any* positive is in the top k. ``None``: only ``j = i``.
        ks: cut-offs; k larger than C counts as C. Tied scores rank the lower column index first.
    Returns:
        ``{k: fraction of queries with a positive in the top k}``.
    """
    q, c = similarity.shape
    if q != c:
        raise ValueError(f"retrieval_recall: similarity must be square, got {tuple(similarity.shape)}")
    ids = groups if groups is not None else torch.arange(c, device=similarity.device)
    pos = ids[:, None].to(similarity.device) == ids[None, :].to(similarity.device)  # (Q, C)
    order = similarity.argsort(dim=1, descending=True, stable=True)  # (Q, C), ties: lower index first
    pos_sorted = pos.gather(1, order)  # (Q, C): is the r-th ranked column a positive
    first_hit = pos_sorted.float().argmax(dim=1)  # (Q,) 0-based rank of the best-ranked positive
    return {int(k): float((first_hit < min(int(k), c)).float().mean()) for k in ks}


@dataclass
class AlignmentMetrics:
    """Alignment quality of paired embeddings (cosine similarities of L2-normalised rows).

    Attributes:
        matched_similarity: mean cosine similarity of the paired rows (the diagonal).
        mean_similarity: mean cosine similarity over all B² pairs.
        recall_i2t: ``{k: recall@k}`` image → text.
        recall_t2i: ``{k: recall@k}`` text → image.
    """

    matched_similarity: float
    mean_similarity: float
    recall_i2t: dict[int, float] = field(default_factory=dict)
    recall_t2i: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """Flat dict for logging: ``recall_i2t@1`` etc."""
        out = {"matched_similarity": self.matched_similarity, "mean_similarity": self.mean_similarity}
        out.update({f"recall_i2t@{k}": v for k, v in self.recall_i2t.items()})
        out.update({f"recall_t2i@{k}": v for k, v in self.recall_t2i.items()})
        return out


@torch.no_grad()
def alignment_metrics(
    img_emb: Tensor, txt_emb: Tensor, groups: Tensor | None = None, ks: Sequence[int] = (1, 5, 10)
) -> AlignmentMetrics:
    """Matched/mean cosine similarity and recall@k in both directions on a fixed evaluation set.

    Args:
        img_emb: (B, E) image embeddings (normalised here). txt_emb: (B, E), row ``i`` paired with image ``i``.
        groups: optional (B,) group ids (rows sharing an instruction are all positives).
        ks: recall cut-offs.
    """
    img = F.normalize(img_emb.float(), dim=-1)
    txt = F.normalize(txt_emb.float(), dim=-1)
    sim = img @ txt.T  # (B, B)
    return AlignmentMetrics(
        matched_similarity=float(sim.diagonal().mean()),
        mean_similarity=float(sim.mean()),
        recall_i2t=retrieval_recall(sim, groups, ks),
        recall_t2i=retrieval_recall(sim.T, groups, ks),
    )


@dataclass
class ModalityGap:
    """Modality gap of two embedding sets (see :func:`modality_gap`).

    Attributes:
        gap: ‖c_v − c_t‖₂, distance between the centroids of the L2-normalised embeddings.
        vision_variance: mean over dimensions of the per-dimension variance of the normalised vision rows.
        text_variance: the same for text.
        gap_to_variance_ratio: ``gap / (vision_variance + text_variance)``.
    """

    gap: float
    vision_variance: float
    text_variance: float
    gap_to_variance_ratio: float

    def as_dict(self) -> dict[str, float]:
        """Flat dict for logging (raw gap first)."""
        return {
            "modality_gap": self.gap,
            "vision_variance": self.vision_variance,
            "text_variance": self.text_variance,
            "gap_to_variance_ratio": self.gap_to_variance_ratio,
        }


@torch.no_grad()
def modality_gap(img_emb: Tensor, txt_emb: Tensor) -> ModalityGap:
    """Modality gap (Liang et al., 2022, "Mind the Gap") and the design source's gap-to-variance ratio.

    With ``x̂ = x / ‖x‖`` for every row (N_v vision rows, N_t text rows, E dimensions)::

        c_v = 1/N_v Σ_i x̂_i,    c_t = 1/N_t Σ_i ŷ_i
        gap = ‖c_v − c_t‖₂                                         (Liang et al.: centroid distance)
        var_v = 1/E Σ_d 1/(N_v − 1) Σ_i (x̂_id − c_v,d)²           (unbiased, as torch.var)
        var_t = the same for text
        gap_to_variance_ratio = gap / (var_v + var_t)              (the design source's ratio)

    The ratio mixes a distance with squared distances, exactly as the source defines it; report the raw
    gap first. Both sets need at least 2 rows; they need not be paired.

    Args:
        img_emb: (N_v, E); txt_emb: (N_t, E).
    """
    if img_emb.dim() != 2 or txt_emb.dim() != 2 or img_emb.shape[1] != txt_emb.shape[1]:
        raise ValueError(
            f"modality_gap: need (N, E) inputs, got {tuple(img_emb.shape)}, {tuple(txt_emb.shape)}"
        )
    if img_emb.shape[0] < 2 or txt_emb.shape[0] < 2:
        raise ValueError("modality_gap: each modality needs at least 2 rows for a variance")
    img = F.normalize(img_emb.double(), dim=-1)
    txt = F.normalize(txt_emb.double(), dim=-1)
    gap = float(torch.linalg.vector_norm(img.mean(0) - txt.mean(0)))
    var_v = float(img.var(dim=0, correction=1).mean())
    var_t = float(txt.var(dim=0, correction=1).mean())
    denom = var_v + var_t
    return ModalityGap(
        gap=gap,
        vision_variance=var_v,
        text_variance=var_t,
        gap_to_variance_ratio=gap / denom if denom > 0 else (math.inf if gap > 0 else math.nan),
    )
