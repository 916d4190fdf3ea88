"""The VLA policy: camera images + instruction (+ robot state) -> a chunk of future actions.

::

    images {cam: (B,3,H,W) uint8} ─► shared vision encoder ─► + camera embedding ─┐ "vision" (B, C·(1+N), D)
    instruction [str] * B ─────────► language encoder ─────────────────────────────┤ "language" (B, 1+L, D)
    state (B, S) ─► normalise ─────► proprio MLP ──────────────────────────────────┤ "proprio" (B, 1, D)
    [+ past states (B, P, S): motion state_t - state_{t-j}, j = 1..P, read by the same MLP]
                                                                                    ▼
                                                fusion (registry name) ─► FusionOutput
                                                                                    ▼
                          [temporal memory over the last K pooled features, per episode]
                                                                                    ▼
                                       action head (regression | bins | flow) ─► (B, k, A)

Modality dropout (training only) masks out a camera's tokens or the instruction of single samples, so no
modality dominates and a missing camera is survivable. ``act`` (one step, with chunk execution or
temporal ensembling) lives in :mod:`mmvla.policy.runtime`; saving and loading in
:mod:`mmvla.policy.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvla.core.handover import HandOver
from mmvla.core.keys import ACTION_KEY, ENV_STATE_KEY, STATE_KEY
from mmvla.modules.fusion import FusionOutput, ModalityTokens, build_fusion
from mmvla.modules.heads import build_head
from mmvla.modules.language import (
    LanguageConfig,
    WordTokenizer,
    build_language_encoder,
)
from mmvla.modules.lexicon import LexicalGrounding
from mmvla.modules.memory import MemoryConfig, TemporalMemory
from mmvla.modules.proprio import ProprioConfig, ProprioEncoder
from mmvla.modules.vision import VisionConfig, build_vision_encoder
from mmvla.modules.vision_trace import VisionTrace
from mmvla.policy import checkpoint
from mmvla.policy.config import PolicyConfig
from mmvla.policy.normalize import Normalizer
from mmvla.policy.observation import observation_to_batch, validate_observation
from mmvla.policy.protocol import Policy
from mmvla.policy.reading import InstructionReader
from mmvla.policy.runtime import ActionChunker
from mmvla.policy.safety import SafetyConfig, SafetyMonitor
from mmvla.sim.tabletop.wordings import TRAIN_PER_TASK, training_vocabulary

# Motion since a past step, in state standard deviations, is scaled by this before the proprio MLP: one
# control step moves the tabletop gripper ~0.1-0.4 standard deviations.
STATE_MOTION_GAIN = 5.0


def _build_dataclass(cls: Any, options: Mapping[str, Any], **forced: Any) -> Any:
    """Instantiate config dataclass ``cls`` from ``options`` plus ``forced`` fields; unknown keys are named."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {', '.join(unknown)}")
    return cls(**{**options, **{k: v for k, v in forced.items() if k in known}})


class VLAPolicy(nn.Module):
    """Vision-language-action policy assembled from a :class:`PolicyConfig`.

    Args:
        cfg: the policy config.
        normalizer: state/action statistics (from the dataset); saved beside the weights.
    """

    def __init__(self, cfg: PolicyConfig, normalizer: Normalizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.normalizer = normalizer
        for key, width in ((STATE_KEY, cfg.state_dim), (ACTION_KEY, cfg.action_dim)):
            if key not in normalizer.modes:
                raise ValueError(f"normaliser has no statistics for {key!r}")
            if normalizer.dim(key) != width:
                raise ValueError(
                    f"statistics for {key!r} have width {normalizer.dim(key)}, config expects {width}"
                )
        D = cfg.dim
        self.vision = build_vision_encoder(
            _build_dataclass(VisionConfig, cfg.vision, dim=D, image_size=cfg.image_size)
        )
        self.camera_embed = nn.Parameter(torch.zeros(len(cfg.cameras), D))  # one learned vector per camera
        nn.init.normal_(self.camera_embed, std=0.02)
        # ground_phrases: one learned vector per role (0: the object to move, 1: the place base).
        self.role_embed = nn.Parameter(torch.zeros(2, D)) if cfg.ground_phrases else None
        if self.role_embed is not None:
            nn.init.normal_(self.role_embed, std=0.02)
        tokenizer = WordTokenizer.build(cfg.instructions)
        self.language = build_language_encoder(
            _build_dataclass(LanguageConfig, cfg.language, dim=D), tokenizer
        )
        self.proprio = (
            ProprioEncoder(ProprioConfig(state_dim=cfg.state_dim * (1 + cfg.state_history), dim=D))
            if cfg.use_proprio
            else None
        )
        self.fusion = build_fusion(cfg.fusion, cfg.fusion_config())
        self.memory = (
            TemporalMemory(_build_dataclass(MemoryConfig, cfg.temporal, dim=D)) if cfg.temporal else None
        )
        self.memory_proj = nn.Linear(D, D) if self.memory is not None else None
        if self.memory_proj is not None:
            nn.init.zeros_(self.memory_proj.weight)
            nn.init.zeros_(self.memory_proj.bias)
        self.head = build_head(cfg.head_config())
        # Auxiliary read-out of privileged simulator state (training-time supervision only).
        self.aux_state = (
            nn.Linear(D, cfg.env_state_dim) if cfg.aux_state_weight > 0 and cfg.env_state_dim else None
        )
        self.chunk_mode = "ensemble"  # run-time chunk use: "ensemble" or "execute" (see ActionChunker)
        # Run-time safety layer of act() (validation, hold-position fallback, clamps); None switches it off.
        self.safety: SafetyMonitor | None = SafetyMonitor(SafetyConfig())
        # Run-time reading of words training never showed (PolicyConfig.lexicon; set_lexicon switches it).
        self.set_lexicon(cfg.lexicon)
        self.vision_trace: VisionTrace | None = None  # see trace_vision()

    def trace_vision(self, enabled: bool = True, threads: int = 1) -> None:
        """Run the vision encoder as TorchScript graphs at inference (eval mode, no autograd): same
        outputs bit for bit, without leaving Python between ops (:mod:`mmvla.modules.vision_trace`);
        ``threads`` > 1 computes a large image batch as that many slices at once. The policy server
        turns it on; training and ``torch.enable_grad`` calls stay eager."""
        self.vision_trace = VisionTrace(self.vision, threads) if enabled else None

    def prepare_vision_trace(self, max_batch: int) -> None:
        """Trace (and check against eager) the vision encoder for every image batch a forward of 1 ..
        ``max_batch`` samples gives it, ahead of use: C per sample, and with ``ground_phrases`` up to 2C
        (the place base's pass). No-op unless :meth:`trace_vision` is on."""
        if self.vision_trace is None:
            return
        C, size = len(self.cfg.cameras), self.cfg.image_size
        passes = 2 if self.cfg.ground_phrases else 1
        cond_dim = self.vision.cfg.dim if self.vision.cfg.condition else None
        self.vision_trace.prepare((size, size), [n * C for n in range(1, passes * max_batch + 1)], cond_dim)

    def set_lexicon(self, lexicon: str) -> None:
        """How instructions are read (:mod:`mmvla.policy.reading`): "wordnet" rewrites each word outside
        the training vocabulary into the known word WordNet relates it to; "wordnet_task" does so, then
        reads an instruction that held such a word as the task its slots name; "none" reads words as given."""
        vocabulary: Sequence[str] = ()
        if lexicon != "none":
            vocabulary = self.cfg.vocabulary or training_vocabulary(self.cfg.instructions, TRAIN_PER_TASK)
        self.reader = InstructionReader(lexicon, vocabulary)

    @property
    def lexicon(self) -> str:
        """How instructions are read now (PolicyConfig.lexicon unless :meth:`set_lexicon` switched it)."""
        return self.reader.lexicon

    @property
    def grounding(self) -> LexicalGrounding | None:
        """The WordNet grounding of unseen words, None with ``lexicon="none"``."""
        return self.reader.grounding

    def read_instructions(self, instructions: Sequence[str]) -> list[str]:
        """What the language encoder reads: normalised text (case, punctuation, spacing), unseen words
        grounded when a lexicon is on (:class:`~mmvla.policy.reading.InstructionReader`).
        ``"Nudge the cobalt drum!"`` -> ``"push the blue cylinder"``."""
        return self.reader(instructions)

    # ---------------------------------------------------------------- encoding
    def encode(
        self,
        images: Mapping[str, Tensor],
        instructions: Sequence[str],
        state: Tensor,
        past_state: Tensor | None = None,
    ) -> ModalityTokens:
        """Encode one time step of every modality.

        Args:
            images: camera -> (B, 3, H, W) uint8 (or float in [0, 1]); every camera of the config.
            instructions: B instruction strings.
            state: (B, S) raw robot state.
            past_state: (B, P, S) raw states of the P steps before, oldest first (``state_history = P``);
                ``None`` reads as a robot that has not moved.
        Returns:
            ModalityTokens with "vision" (B, C·(1 + N), D) (per camera: pooled token, then the N grid
            tokens; N = 0 with ``vision_tokens="pooled"``; with ``ground_phrases`` (B, C·2, D): per camera
            the target's token, then the base's), "language" (B, 1 + L, D) (sentence
            summary, then words), optionally "proprio" (B, 1, D).
        """
        cams = self.cfg.cameras
        missing = [c for c in cams if c not in images]
        if missing:
            raise ValueError(
                f"missing camera image(s): {', '.join(missing)} (policy reads {', '.join(cams)})"
            )
        x = torch.stack([images[c] for c in cams], dim=1)  # (B, C, 3, H, W)
        B, C = x.shape[:2]
        x = x.float() / 255.0 if not torch.is_floating_point(x) else x.float()
        # Case, punctuation and spacing never change what an instruction means ("Pick up the red cube.").
        texts = self.read_instructions(instructions)
        lang = self.language(texts)
        # The sentence summary first, then the word tokens; the summary is valid when any word is.
        lang_tokens = torch.cat([lang.pooled[:, None], lang.tokens], dim=1)  # (B, 1 + L, D)
        lang_mask = torch.cat([lang.mask.any(-1, keepdim=True), lang.mask], dim=1)  # (B, 1 + L)
        cam_keep = torch.ones(B, C, dtype=torch.bool, device=x.device)
        keep_txt: Tensor | None = None
        if self.training:
            g = self.cfg
            if g.camera_dropout > 0:
                cam_keep = torch.rand(B, C, device=x.device) >= g.camera_dropout
            if g.instruction_dropout > 0:
                keep_txt = torch.rand(B, 1, device=x.device) >= g.instruction_dropout  # (B, 1)
                lang_mask = lang_mask & keep_txt
                lang_tokens = lang_tokens * keep_txt[..., None]
        if self.role_embed is not None:
            v, keep = self._phrase_tokens(x, texts, keep_txt)  # (B, C, 2, D), (B, C, 2)
        else:
            # A conditioned trunk reads the (possibly dropped) sentence summary, shared by every camera.
            cond = lang_tokens[:, 0].repeat_interleave(C, dim=0) if self.vision.cfg.condition else None
            encoder = self.vision_trace or self.vision
            vis = encoder(x.flatten(0, 1), cond)  # tokens (B·C, N, D), pooled (B·C, D)
            # Per camera: the pooled summary (spatial-softmax keypoints for the CNN) first, then the grid.
            per_cam = vis.pooled[:, None]  # (B·C, 1, D)
            if self.cfg.vision_tokens == "all":
                per_cam = torch.cat([per_cam, vis.tokens], dim=1)  # (B·C, 1 + N, D)
            N = per_cam.shape[1]
            v = per_cam.view(B, C, N, -1)  # (B, C, 1 + N, D)
            keep = torch.ones(B, C, N, dtype=torch.bool, device=x.device)
        keep = keep & cam_keep[:, :, None]
        v = (v + self.camera_embed[None, :, None]) * keep[..., None]  # (B, C, N, D)
        tokens = {"vision": v.flatten(1, 2), "language": lang_tokens}  # (B, C·N, D), (B, 1 + L, D)
        masks = {"vision": keep.flatten(1), "language": lang_mask}
        if self.proprio is not None:
            tokens["proprio"] = self.proprio(self._proprio_input(state, past_state))  # (B, 1, D)
        return ModalityTokens(tokens=tokens, masks=masks)

    def trunk_texts(self, texts: Sequence[str]) -> list[str]:
        """What a conditioned trunk's (first) pass reads for B read texts (:meth:`read_instructions`):
        the texts themselves, or with ``ground_phrases`` the object to move ("the red cube"; a text
        that names no single task reads whole)."""
        if not self.cfg.ground_phrases:
            return list(texts)
        return [self.reader.phrases(t)[0] or t for t in texts]

    def _phrase_tokens(
        self, x: Tensor, texts: Sequence[str], keep_txt: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``PolicyConfig.ground_phrases``: the trunk once per named object.

        Args:
            x: (B, C, 3, H, W) float images in [0, 1].
            texts: the B texts the language encoder reads (:meth:`read_instructions`).
            keep_txt: (B, 1) bool, False where training dropped the instruction (its conditions are
                zeroed like the sentence's); None keeps every one.
        Returns:
            tokens (B, C, 2, D): per camera the target pass's pooled token, then the base pass's (zero
            where there is no base), role vectors added; valid (B, C, 2) bool.
        """
        assert self.role_embed is not None
        B, C = x.shape[:2]
        roles = [self.reader.phrases(t) for t in texts]
        rows = [i for i, r in enumerate(roles) if r[1]]  # samples that name a base
        nb = len(rows)
        # One language call and one trunk call for both roles: the B first passes, then the nb base passes.
        cond = self.language([*self.trunk_texts(texts), *(roles[i][1] for i in rows)]).pooled  # (B + nb, D)
        idx = torch.tensor(rows, dtype=torch.long, device=x.device)
        if keep_txt is not None:
            cond = cond * torch.cat([keep_txt, keep_txt[idx]])
        images = torch.cat([x, x[idx]]).flatten(0, 1)  # ((B + nb)·C, 3, H, W)
        encoder = self.vision_trace or self.vision
        pooled = encoder(images, cond.repeat_interleave(C, dim=0)).pooled.view(B + nb, C, -1)
        first = pooled[:B]  # (B, C, D)
        # The base passes in their rows, zero where the text names no base: (B, C, D).
        second = pooled.new_zeros(first.shape).index_copy(0, idx, pooled[B:])
        has_base = torch.zeros(B, dtype=torch.bool, device=x.device).index_fill(0, idx, True)
        v = torch.stack([first, second], dim=2) + self.role_embed[None, None]  # (B, C, 2, D)
        valid = torch.stack([torch.ones_like(has_base), has_base], dim=1)[:, None].expand(B, C, 2)
        return v, valid

    def _proprio_input(self, state: Tensor, past_state: Tensor | None) -> Tensor:
        """(B, S) state [+ (B, P, S) past states] -> (B, S·(1 + P)): the normalised state, then the
        normalised motion since each past step times :data:`STATE_MOTION_GAIN`, most recent last."""
        x = self.normalizer.normalize(STATE_KEY, state.float())  # (B, S)
        P = self.cfg.state_history
        if not P:
            return x
        if past_state is None:
            return torch.cat([x, x.new_zeros(x.shape[0], P * x.shape[1])], dim=1)
        if past_state.shape != (x.shape[0], P, x.shape[1]):
            raise ValueError(
                f"past_state must be {(x.shape[0], P, x.shape[1])}, got {tuple(past_state.shape)}"
            )
        past = self.normalizer.normalize(STATE_KEY, past_state.float())  # (B, P, S)
        return torch.cat([x, ((x[:, None] - past) * STATE_MOTION_GAIN).flatten(1)], dim=1)

    def fuse(
        self,
        images: Mapping[str, Tensor],
        instructions: Sequence[str],
        state: Tensor,
        past_state: Tensor | None = None,
    ) -> FusionOutput:
        """Encode and fuse one time step -> FusionOutput (pooled (B, D), tokens (B, N, D))."""
        return self.fusion(self.encode(images, instructions, state, past_state))

    # ---------------------------------------------------------------- temporal context
    @property
    def history_frames(self) -> int:
        """Past frames each training sample needs (temporal context K - 1; 0 without memory)."""
        return self.memory.cfg.context - 1 if self.memory is not None else 0

    def _with_context(self, fused: FusionOutput, context: Tensor) -> FusionOutput:
        """Add the memory's read-out (B, D) to the pooled feature; a zero-initialised projection makes
        a fresh temporal policy start exactly as its memoryless twin."""
        assert self.memory_proj is not None, "policy has no temporal memory"
        return dataclasses.replace(fused, pooled=fused.pooled + self.memory_proj(context))

    def fuse_window(self, batch: Mapping[str, Any]) -> FusionOutput:
        """Fuse a training batch; with memory, batch images are (B, T, 3, H, W), state (B, T, S) and
        "history_mask" (B, T): every frame is fused (the past ones without gradient when
        ``MemoryConfig.history_grad`` is off), the memory reads the pooled window and the result is the
        current (last) frame's FusionOutput with context added."""
        if self.memory is None:
            return self.fuse(batch["images"], batch["instruction"], batch["state"], batch.get("past_state"))
        state = batch["state"]  # (B, T, S)
        B, T = state.shape[:2]
        if not self.memory.cfg.history_grad and T > 1:  # the T - 1 past frames without gradient
            with torch.no_grad():
                past = self.fuse(
                    {c: x[:, :-1].flatten(0, 1) for c, x in batch["images"].items()},  # (B·(T-1), 3, H, W)
                    [t for t in batch["instruction"] for _ in range(T - 1)],
                    state[:, :-1].flatten(0, 1),
                ).pooled.view(B, T - 1, -1)  # (B, T-1, D)
            last = self.fuse(
                {c: x[:, -1] for c, x in batch["images"].items()}, batch["instruction"], state[:, -1]
            )
            window = torch.cat([past, last.pooled[:, None]], dim=1)  # (B, T, D)
            return self._with_context(last, self.memory.read(window, batch["history_mask"]))
        images = {c: x.flatten(0, 1) for c, x in batch["images"].items()}  # (B·T, 3, H, W)
        texts = [t for t in batch["instruction"] for _ in range(T)]
        fused = self.fuse(images, texts, state.flatten(0, 1))
        pooled = fused.pooled.view(B, T, -1)  # (B, T, D)
        current = FusionOutput(
            tokens=fused.tokens.view(B, T, *fused.tokens.shape[1:])[:, -1],
            mask=fused.mask.view(B, T, -1)[:, -1],
            pooled=pooled[:, -1],
            aux_loss=fused.aux_loss,
            info={
                k: v.view(B, T, *v.shape[1:])[:, -1] for k, v in fused.info.items() if v.shape[:1] == (B * T,)
            },
        )
        return self._with_context(current, self.memory.read(pooled, batch["history_mask"]))

    # ---------------------------------------------------------------- training
    def forward(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """Training loss on a batch from :class:`mmvla.data.VLADataset`.

        Args:
            batch: "images" {cam: (B, 3, H, W)}, "instruction" [str]*B, "state" (B, S),
                "action" (B, k, A) raw, "action_mask" (B, k) bool; with temporal memory images and
                state carry a time axis T and "history_mask" (B, T) (see :meth:`fuse_window`).
        Returns:
            (scalar loss, {"loss_action": ..., "loss_aux": ...}).
        """
        fused = self.fuse_window(batch)
        target = self.normalizer.normalize(ACTION_KEY, batch["action"].float())  # (B, k, A)
        k = self.cfg.chunk_size
        if target.shape[1] != k:
            raise ValueError(
                f"batch holds {target.shape[1]} actions per sample, policy predicts chunks of {k}"
            )
        action_loss = self.head.loss(fused, target, batch["action_mask"])
        loss = action_loss + fused.aux_loss
        parts = {"loss_action": float(action_loss.detach()), "loss_aux": float(fused.aux_loss.detach())}
        if self.aux_state is not None:
            if "environment_state" not in batch:
                raise ValueError("aux_state_weight > 0 but the batch has no 'environment_state'")
            want = self.normalizer.normalize(ENV_STATE_KEY, batch["environment_state"].float())  # (B, E)
            state_loss = F.smooth_l1_loss(self.aux_state(fused.pooled), want)
            loss = loss + self.cfg.aux_state_weight * state_loss
            parts["loss_state"] = float(state_loss.detach())
        return loss, parts

    @torch.no_grad()
    def predict_chunk(
        self,
        images: Mapping[str, Tensor],
        instructions: Sequence[str],
        state: Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, FusionOutput]:
        """Predict the next k actions of single frames in raw units: (B, k, A), clipped to [-1, 1];
        also the fused features. Stateless: temporal memory is only used through :meth:`act`."""
        fused = self.fuse(images, instructions, state)
        return self._decode(fused, generator), fused

    def _decode(self, fused: FusionOutput, generator: torch.Generator | None = None) -> Tensor:
        pred = self.head.predict(fused, generator=generator)  # (B, k, A) normalised
        return self.normalizer.unnormalize(ACTION_KEY, pred).clamp(-1.0, 1.0)

    # ---------------------------------------------------------------- acting
    def reset(self, chunk_mode: str | None = None) -> None:
        """Start a new episode: clear stored chunks, the memory and the safety monitor's episode state
        (optionally switch "ensemble"/"execute" mode)."""
        if chunk_mode is not None:
            self.chunk_mode = chunk_mode
        self._chunker = ActionChunker(self.cfg.chunk_size, mode=self.chunk_mode)
        self._episode_start = True
        self._past_states: list[np.ndarray] = []  # this episode's last 1 + P states (S,), oldest first
        if self.memory is not None:
            self.memory.reset()
        if self.safety is not None:
            self.safety.reset()

    def runtime_state(self) -> dict[str, Any]:
        """A snapshot of the per-episode run-time state (chunk mode, chunker, safety monitor, memory,
        recent states).

        With :meth:`set_runtime_state` one set of weights serves several independent control streams
        (:mod:`mmvla.serving.server` swaps one state per connection in and out around each step).
        """
        if not hasattr(self, "_chunker"):
            self.reset()
        mem = None if self.memory is None else (self.memory.history, self.memory.valid)
        return {
            "chunk_mode": self.chunk_mode,
            "chunker": self._chunker,
            "safety": self.safety,
            "episode_start": self._episode_start,
            "memory": mem,
            "past_states": list(self._past_states),
        }

    def set_runtime_state(self, state: Mapping[str, Any]) -> None:
        """Install a state returned by :meth:`runtime_state`."""
        # Plain attributes: set directly, past nn.Module.__setattr__'s registry checks (the server swaps
        # states several times per request; those checks were 4% of its GIL time).
        self.__dict__.update(
            chunk_mode=state["chunk_mode"],
            _chunker=state["chunker"],
            safety=state["safety"],
            _episode_start=state["episode_start"],
            _past_states=list(state["past_states"]),
        )
        if self.memory is not None:
            self.memory.history, self.memory.valid = state["memory"]

    def _check(self, observation: Mapping[str, Any]) -> np.ndarray | None:
        """Validate ``observation``; the (A,) hold action while the safety layer sees a failed camera."""
        c = self.cfg
        if self.safety is None:
            validate_observation(observation, c.cameras, c.image_size, c.state_dim)
            hold = None
        else:
            hold = self.safety.check(observation, c.cameras, c.image_size, c.state_dim, c.action_dim)
        if not hasattr(self, "_chunker"):
            self.reset()
        if self.training:
            raise RuntimeError("act() needs eval mode: call policy.eval() first")
        return hold

    def _observe_state(self, observation: Mapping[str, Any]) -> None:
        """Keep this step's robot state for ``state_history`` (every step, acted on or not)."""
        if self.cfg.state_history:
            self._past_states.append(np.asarray(observation["state"], dtype=np.float32).copy())
            del self._past_states[: -(1 + self.cfg.state_history)]

    def _past_window(self) -> Tensor | None:
        """(1, P, S) states of the P steps before the current one, oldest first; before the episode's
        first step its first state (as :class:`mmvla.data.VLADataset` pads); None without state history."""
        P = self.cfg.state_history
        if not P or not self._past_states:
            return None
        past = self._past_states[:-1]
        rows = [past[0] if past else self._past_states[0]] * (P - len(past)) + past
        return torch.from_numpy(np.stack(rows))[None]

    def _fuse_step(self, observation: Mapping[str, Any]) -> FusionOutput:
        """Fuse one observation; with memory, append it to the episode's window and add the read-out."""
        images, texts, state = observation_to_batch(observation, self.cfg.cameras)
        fused = self.fuse(images, texts, state, self._past_window())
        if self.memory is not None:
            start = torch.tensor([self._episode_start])
            fused = self._with_context(fused, self.memory.step(fused.pooled, start))
            self._episode_start = False
        return fused

    def _raise_handover(self, hold: np.ndarray) -> None:
        """Raise :class:`HandOver` when the safety layer's "handover" fallback has just fired."""
        if self.safety is not None and self.safety.handed_over:
            last = self.safety.last
            raise HandOver(last.reason if last is not None else "a camera failed", hold)

    @torch.inference_mode()
    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One control step: validated observation -> (A,) float32 action in [-1, 1].

        ``observation`` holds one uint8 (H, W, 3) image per camera, "state" (S,) and "instruction", and
        optionally "timestamp" / "<camera>_timestamp" (seconds, ``time.time()`` clock). Call :meth:`reset`
        at every episode start. With ``self.safety`` set (the default) a stale, frozen or blank camera
        gives the hold action (stored chunks are dropped, the frame does not enter the memory) and
        actions are clamped; see :mod:`mmvla.policy.safety`. Raises :class:`ObservationError` for an
        invalid observation and :class:`~mmvla.policy.safety.HandOver` when the safety layer's
        "handover" fallback fires (stop the episode).
        """
        hold = self._check(observation)
        self._observe_state(observation)
        if hold is not None:
            self._chunker.reset()  # plans made before the failure are stale once it recovers
            self._raise_handover(hold)
            return hold
        # With memory every frame is fused (the memory must see consecutive frames, as in training).
        if self.memory is not None or self._chunker.needs_prediction():
            fused = self._fuse_step(observation)
            if self._chunker.needs_prediction():
                self._chunker.push(self._decode(fused)[0].cpu().numpy())
        action = self._chunker.pop()
        return action if self.safety is None else self.safety.limit(action)

    @torch.inference_mode()
    def act_chunk(self, observation: Mapping[str, Any]) -> np.ndarray:
        """The whole (k, A) float32 chunk for a client that executes it open-loop (asynchronous serving).

        Same validation and safety as :meth:`act` (a failed camera gives k hold actions; every row is
        clamped); the step chunker of :meth:`act` is neither used nor changed. A temporal memory sees
        only the frames chunks are requested for.
        """
        hold = self._check(observation)
        self._observe_state(observation)
        if hold is not None:
            self._raise_handover(hold)
            return np.repeat(hold[None], self.cfg.chunk_size, axis=0)
        chunk = self._decode(self._fuse_step(observation))[0].cpu().numpy()  # (k, A)
        return chunk if self.safety is None else self.safety.limit(chunk)

    def save_pretrained(self, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Atomically write weights (safetensors), config.json and stats.json to ``directory``."""
        return checkpoint.save_pretrained(self, directory, extra)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], map_location: str = "cpu") -> VLAPolicy:
        """Load a policy written by :meth:`save_pretrained` (eval mode); never unpickles anything.

        Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and tensor for a
        malformed config, missing statistics, or weights of the wrong names or shapes.
        """
        cfg, normalizer, state = checkpoint.read_checkpoint(directory, map_location)
        policy = cls(cfg, normalizer)
        checkpoint.load_state_strict(policy, state, str(Path(directory) / checkpoint.WEIGHTS))
        return policy.eval()


_LOCAL_IS_A_POLICY: type[Policy] = VLAPolicy  # mypy checks the local policy against the protocol
