"""The policy's one JSON-serialisable config; every sub-module's config is built from it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from mmvla.modules.fusion import FusionConfig, available_fusions
from mmvla.modules.heads import HeadConfig
from mmvla.modules.lexicon import LEXICONS

CONFIG_VERSION = 1
MAX_STATE_HISTORY = 16  # past robot states the proprio encoder may read


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a policy (weights and statistics live in separate files).

    Attributes:
        cameras: camera names the policy reads, any subset of the environment's cameras.
        image_size: square image side in pixels the encoder expects.
        state_dim: proprioceptive state width (tabletop: ee x, y, z, yaw, gripper opening).
        action_dim: action width (7: Δx, Δy, Δz, Δroll, Δpitch, Δyaw, gripper).
        instructions: canonical instructions; the word tokenizer's vocabulary is built from them.
        dim: token width D shared by encoders, fusion and head.
        vision: options of the vision encoder (``kind``: cnn | patch | efficientnet_lite0, ...).
        language: options of the language encoder (``kind``: lstm | transformer | minilm, ...).
        vision_tokens: what each camera gives the fusion: ``"all"`` (the pooled token, then the N grid
            tokens) or ``"pooled"`` (the pooled token alone: with keypoint pooling, *where* things are
            and little else, so the policy cannot memorise scenes through the grid).
        fusion: registry name of the fusion design.
        fusion_options: extra FusionConfig fields (num_layers, num_heads, ...).
        use_proprio: feed the robot state as a token.
        head: HeadConfig fields (kind: regression | bins | flow, chunk_size, ...).
        temporal: MemoryConfig fields (context K, reader lstm | attention) for a per-episode memory of
            the last K fused features, or None for a memoryless policy.
        state_history: P > 0: the proprio encoder also reads how the robot state changed over the last P
            steps (``state_t - state_{t-j}``, j = 1..P; the observation horizon of Diffusion Policy, for
            the state only). A memoryless policy cannot tell a gripper rising with an object (pick) from one
            lowering it onto another (place) at the same height; the last step's motion can. ``act`` keeps the
            episode's last P states; 0: the current state alone.
        camera_dropout: training-time probability of dropping each camera of a sample.
        instruction_dropout: training-time probability of dropping the instruction of a sample.
        action_norm: "mean_std" or "min_max" (bins always use min_max so the bins span the data).
        aux_state_weight: weight of an auxiliary loss that predicts the dataset's privileged
            ``observation.environment_state`` (tabletop: the named object's position) from the pooled
            fused feature: training-time supervision for grounding; the policy never reads it when acting.
        env_state_dim: width E of that state (filled from the dataset when the loss is on).
        lexicon: ``"wordnet"``: every instruction word outside ``vocabulary`` is rewritten into the known
            word WordNet relates it to before the language encoder reads it ("nudge the cobalt drum" ->
            "push the blue cylinder"; :mod:`mmvla.modules.lexicon`); ``"wordnet_task"``: so rewritten, then
            an instruction that held such a word is read as the canonical instruction of the task its
            slots name, when they name one (``VLAPolicy.read_instructions``); ``"none"``: words are read
            as given.
        ground_phrases: the conditioned vision trunk runs once per object the instruction names, each
            pass conditioned on that object's noun phrase alone ("the red cube"; for place a second pass
            on the base, "the blue slab"), instead of once on the whole sentence. Each camera then gives
            one token per role (a learned role vector added; the base's token is masked out when there
            is no base). Finding "the red cube" becomes one skill shared by every family and by both
            roles of place, and the two objects of place never share one conditioning vector. The
            phrases are read with the training lexicon from the text the reader returns; a text that
            names no single task conditions the first pass on the whole sentence. Needs a conditioned
            trunk and ``vision_tokens="pooled"``.
        vocabulary: the words training showed the policy (filled by the trainer from the instructions
            and the wording pool); empty: derived from ``instructions`` and their training wordings.
    """

    cameras: tuple[str, ...] = ("front", "wrist")
    image_size: int = 64
    state_dim: int = 5
    action_dim: int = 7
    instructions: tuple[str, ...] = ()
    dim: int = 128
    vision: dict[str, Any] = field(default_factory=lambda: {"kind": "cnn"})
    language: dict[str, Any] = field(default_factory=lambda: {"kind": "lstm"})
    vision_tokens: str = "all"
    fusion: str = "film"
    fusion_options: dict[str, Any] = field(default_factory=dict)
    use_proprio: bool = True
    head: dict[str, Any] = field(default_factory=lambda: {"kind": "regression", "chunk_size": 4})
    temporal: dict[str, Any] | None = None
    state_history: int = 0
    camera_dropout: float = 0.1
    instruction_dropout: float = 0.0
    action_norm: str = "mean_std"
    aux_state_weight: float = 0.0
    env_state_dim: int = 0
    lexicon: str = "none"
    ground_phrases: bool = False
    vocabulary: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.instructions = tuple(self.instructions)
        self.vocabulary = tuple(self.vocabulary)
        if self.lexicon not in LEXICONS:
            raise ValueError(f"PolicyConfig.lexicon must be one of {LEXICONS}, got {self.lexicon!r}")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"PolicyConfig.cameras must be non-empty and unique, got {self.cameras}")
        if self.image_size < 16:
            raise ValueError(f"PolicyConfig.image_size must be >= 16, got {self.image_size}")
        if self.fusion not in available_fusions():
            raise ValueError(
                f"PolicyConfig.fusion: unknown fusion {self.fusion!r}; available: {', '.join(available_fusions())}"
            )
        if not 0 <= self.state_history <= MAX_STATE_HISTORY:
            raise ValueError(
                f"PolicyConfig.state_history must be in [0, {MAX_STATE_HISTORY}], got {self.state_history}"
            )
        if self.state_history and (self.temporal or not self.use_proprio):
            raise ValueError(
                "PolicyConfig.state_history needs use_proprio and no temporal memory (the memory already "
                "reads past frames, states included)"
            )
        for name in ("camera_dropout", "instruction_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"PolicyConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.vision_tokens not in ("all", "pooled"):
            raise ValueError(
                f"PolicyConfig.vision_tokens must be 'all' or 'pooled', got {self.vision_tokens!r}"
            )
        if self.ground_phrases and (self.vision_tokens != "pooled" or not self.vision.get("condition")):
            raise ValueError(
                "PolicyConfig.ground_phrases needs a conditioned trunk (vision condition=True) and "
                f"vision_tokens='pooled'; got condition={self.vision.get('condition')!r}, "
                f"vision_tokens={self.vision_tokens!r}"
            )
        if self.aux_state_weight < 0 or self.env_state_dim < 0:
            raise ValueError("PolicyConfig: aux_state_weight and env_state_dim must be >= 0")
        if self.action_norm not in ("mean_std", "min_max"):
            raise ValueError(
                f"PolicyConfig.action_norm must be 'mean_std' or 'min_max', got {self.action_norm!r}"
            )
        # Build the sub-configs once so a bad field fails here, naming itself.
        self.fusion_config()
        self.head_config()

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names the fusion sees."""
        return ("language", "vision", *(("proprio",) if self.use_proprio else ()))

    def fusion_config(self) -> FusionConfig:
        """The FusionConfig implied by this policy config."""
        return FusionConfig(dim=self.dim, modalities=self.modalities, **self.fusion_options)

    def head_config(self) -> HeadConfig:
        """The HeadConfig implied by this policy config."""
        return HeadConfig(dim=self.dim, action_dim=self.action_dim, **self.head)

    @property
    def chunk_size(self) -> int:
        """Actions predicted per step (k)."""
        return self.head_config().chunk_size

    def effective_action_norm(self) -> str:
        """Bins need a bounded range, so they always normalise actions with min/max."""
        return "min_max" if self.head_config().kind == "bins" else self.action_norm

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists), with a format version."""
        d = dataclasses.asdict(self)
        d["config_version"] = CONFIG_VERSION
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them."""
        d = dict(d)
        version = d.pop("config_version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(f"policy config version {version} is not supported (expected {CONFIG_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"policy config has unknown field(s): {', '.join(unknown)}")
        return cls(**d)
