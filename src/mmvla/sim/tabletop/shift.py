"""Distribution shifts of the tabletop: graded departures from the training scenes (pure Python + NumPy).

A :class:`ShiftConfig` names a severity per axis: 0 = clean (the training scenes, bit for bit), 1 = mild,
2 = medium, 3 = strong; a fractional severity interpolates every magnitude linearly from clean. With
``randomise=True`` each axis's severity is drawn per episode uniformly in [0, its value] (domain
randomisation for data collection). :class:`mmvla.sim.tabletop.env.TabletopEnv` applies the shift at reset.

The axes and their magnitudes at mild / medium / strong (directions and signs drawn per episode):

================  ==========================================================================================
``camera``        front camera moved 1 / 2.5 / 5 cm in a random 3-D direction and turned 2 / 5 / 10 degrees
                  about a random axis (``model.cam_pos``, ``model.cam_quat``)
``lighting``      every light's diffuse and ambient scaled by 1 -+ 0.2 / 0.4 / 0.6 (dimmer or brighter); the
                  top light's direction tilted 15 / 30 / 50 degrees; colour temperature 6500 K -> 5500 or
                  8000 K / 4500 or 10000 K / 3500 or 15000 K (warmer or cooler; ``model.light_*``,
                  ``model.vis.headlight``)
``table``         table colour moved 0.1 / 0.2 / 0.3 (RGB distance, channels in [0, 1]) from its grey in a
                  random direction; from severity 2.5 (strong) also a 5 cm checker texture
                  (``model.geom_rgba``, ``model.geom_matid``)
``object_size``   every object on the table scaled by 1 -+ 0.1 / 0.2 / 0.3 (smaller or larger; geometry,
                  and mass and inertia at constant density); objects rest on the table and the success
                  checks and the expert use the scaled sizes
``distractors``   1 / 2 / 3 more distractor objects than the episode would have (up to 8 on the table;
                  fewer when no free spot is found: the table's capacity)
``gripper_start`` gripper start pose moved 3 / 6 / 9 cm horizontally (random direction), 1 / 2 / 3 cm up
                  or down, and turned 10 / 20 / 35 degrees (random sign)
``image``         every camera image blurred (Gaussian, sigma 0.5 / 1.0 / 1.5 px of a 64 px image), noised
                  (Gaussian, std 3 / 6 / 12 of 255 levels) and JPEG-compressed (quality 80 / 50 / 20)
``language``      the instruction given in the observation is a held-out wording: held-out phrasing with
                  training colour and shape words / fully held-out words / held-out words with one typo
                  (:mod:`mmvla.sim.tabletop.wordings`); ``info["instruction"]`` stays canonical
================  ==========================================================================================

Randomness: every shift draws from its own generator, ``np.random.default_rng([SHIFT_SALT, seed,
episode, axis index])`` (:func:`shift_rng`), never from the environment's ``np_random``: a shifted episode
has the same task, objects, layout and gripper start (before its offset) as the clean one at that seed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

SHIFT_AXES: tuple[str, ...] = (
    "camera",
    "lighting",
    "table",
    "object_size",
    "distractors",
    "gripper_start",
    "image",
    "language",
)
# Axes data collection may randomise over: held-out wordings must never reach a training set.
RANDOMISABLE_AXES: tuple[str, ...] = tuple(a for a in SHIFT_AXES if a != "language")
SEVERITY_NAMES: dict[str, int] = {"clean": 0, "mild": 1, "medium": 2, "strong": 3}
SEVERITY_LEVELS: tuple[str, ...] = ("mild", "medium", "strong")
MAX_SEVERITY = 3.0
SHIFT_SALT = 0x5F1F7  # first word of every shift generator's seed: disjoint from the env's own stream

# ---- magnitudes at mild, medium, strong (severity 1, 2, 3) ----------------------------------------
CAMERA_TRANSLATION_CM = (1.0, 2.5, 5.0)
CAMERA_ROTATION_DEG = (2.0, 5.0, 10.0)
LIGHT_INTENSITY_CHANGE = (0.2, 0.4, 0.6)  # relative: diffuse and ambient x (1 - c) or x (1 + c)
LIGHT_DIRECTION_DEG = (15.0, 30.0, 50.0)
LIGHT_WARM_K = (5500.0, 4500.0, 3500.0)
LIGHT_COOL_K = (8000.0, 10000.0, 15000.0)
NOMINAL_K = 6500.0  # the clean scene's white light
TABLE_RGB_DISTANCE = (0.1, 0.2, 0.3)
TABLE_TEXTURE_FROM = 2.5  # severity from which the table gets the checker texture
OBJECT_SCALE_CHANGE = (0.1, 0.2, 0.3)  # relative: sizes x (1 - c) or x (1 + c)
DISTRACTORS_ADDED = (1, 2, 3)
MAX_OBJECTS = 8  # objects on the table at most with added distractors
GRIPPER_START_XY_CM = (3.0, 6.0, 9.0)
GRIPPER_START_Z_CM = (1.0, 2.0, 3.0)
GRIPPER_START_YAW_DEG = (10.0, 20.0, 35.0)
IMAGE_BLUR_SIGMA_PX = (0.5, 1.0, 1.5)  # pixels of a 64 px image (scaled with the image side)
IMAGE_NOISE_STD = (3.0, 6.0, 12.0)  # of 255 levels
IMAGE_JPEG_QUALITY = (80.0, 50.0, 20.0)
LANGUAGE_SETS = ("heldout_phrasing", "heldout", "heldout_typo")  # mild, medium, strong


def magnitude(levels: tuple[float, float, float], severity: float) -> float:
    """A magnitude at ``severity`` in [0, 3]: 0 at 0, ``levels[k - 1]`` at k, linear in between."""
    return float(np.interp(severity, (0.0, 1.0, 2.0, 3.0), (0.0, *levels)))


def discrete_level(severity: float) -> int:
    """A discrete axis's level (0..3) at ``severity``: rounded half up."""
    return math.floor(severity + 0.5)


def severity_value(value: Any, what: str = "severity") -> float:
    """``value`` ("clean", "mild", "medium", "strong" or a number in [0, 3]) as a float severity."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key in SEVERITY_NAMES:
            return float(SEVERITY_NAMES[key])
        try:
            value = float(key)
        except ValueError:
            raise ValueError(
                f"{what} must be one of {tuple(SEVERITY_NAMES)} or a number in [0, 3], got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a severity name or a number in [0, 3], got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= MAX_SEVERITY):
        raise ValueError(f"{what} must be in [0, 3] (0 clean, 1 mild, 2 medium, 3 strong), got {value!r}")
    return v


def severity_name(severity: float) -> str:
    """ "clean", "mild", "medium", "strong" for 0..3, else the number."""
    for name, v in SEVERITY_NAMES.items():
        if severity == v:
            return name
    return f"{severity:g}"


@dataclass(frozen=True)
class ShiftConfig:
    """Severity per shift axis (0 clean .. 3 strong; see the module docstring for the magnitudes).

    Attributes:
        camera, lighting, table, object_size, distractors, gripper_start, image, language: the severity
            of each axis, a number in [0, 3] or a name ("clean", "mild", "medium", "strong").
        randomise: draw each axis's severity per episode uniformly in [0, its value] (domain
            randomisation) instead of using it as given.
        clean_fraction: with ``randomise``, the probability in [0, 1] that an episode is left clean
            (every axis 0), drawn per episode; the rest are randomised as above. 0 without ``randomise``.
    """

    camera: float = 0.0
    lighting: float = 0.0
    table: float = 0.0
    object_size: float = 0.0
    distractors: float = 0.0
    gripper_start: float = 0.0
    image: float = 0.0
    language: float = 0.0
    randomise: bool = False
    clean_fraction: float = 0.0

    def __post_init__(self) -> None:
        for axis in SHIFT_AXES:
            object.__setattr__(self, axis, severity_value(getattr(self, axis), f"shift.{axis}"))
        if not isinstance(self.randomise, bool):
            raise ValueError(f"shift.randomise must be a bool, got {self.randomise!r}")
        frac = self.clean_fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac <= 1.0:
            raise ValueError(f"shift.clean_fraction must be a number in [0, 1], got {frac!r}")
        if frac and not self.randomise:
            raise ValueError("shift.clean_fraction applies to domain randomisation: set randomise too")
        object.__setattr__(self, "clean_fraction", float(frac))

    @classmethod
    def coerce(cls, value: ShiftConfig | Mapping[str, Any] | str | None) -> ShiftConfig:
        """A ShiftConfig from itself, None (clean), a dict of fields or a spec string (:func:`parse_shift`)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return parse_shift(value)
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown shift field(s) {unknown}; expected any of {sorted(known)}")
            return cls(**dict(value))
        raise ValueError(f"shift must be a ShiftConfig, a dict or a string, got {type(value).__name__}")

    @classmethod
    def single(cls, axis: str, severity: float | str) -> ShiftConfig:
        """Only ``axis`` shifted, at ``severity``."""
        check_axes((axis,))
        return cls(**{axis: severity})  # type: ignore[arg-type]

    @property
    def active(self) -> bool:
        """Whether any axis is shifted (False: the clean scene)."""
        return any(getattr(self, a) > 0 for a in SHIFT_AXES)

    def severities(self) -> dict[str, float]:
        """``{axis: severity}`` of the axes shifted (severity > 0)."""
        return {a: float(getattr(self, a)) for a in SHIFT_AXES if getattr(self, a) > 0}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return asdict(self)


def check_axes(axes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``axes`` if every name is a shift axis (and none repeats); ValueError naming the known ones."""
    bad = [a for a in axes if a not in SHIFT_AXES]
    if bad:
        raise ValueError(f"unknown shift axis/axes {bad}; expected any of {', '.join(SHIFT_AXES)} or 'all'")
    if len(set(axes)) != len(axes):
        raise ValueError(f"a shift axis is listed twice in {list(axes)}")
    return tuple(axes)


def parse_axes(text: str) -> tuple[str, ...]:
    """ "all" or a comma-separated list of axes -> the axes, in :data:`SHIFT_AXES` order for "all"."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if items == ["all"]:
        return SHIFT_AXES
    if not items:
        raise ValueError("expected 'all' or a comma-separated list of shift axes")
    return check_axes(items)


def parse_shift(text: str, all_axes: tuple[str, ...] = SHIFT_AXES) -> ShiftConfig:
    """``"camera=strong,lighting=1.5"`` (``all=medium`` sets every axis of ``all_axes``; a trailing
    ``,randomise`` draws each per episode in [0, it], and ``clean_fraction=0.5`` leaves that share of
    the episodes clean) -> a :class:`ShiftConfig`."""
    values: dict[str, Any] = {}
    randomise = False
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item in ("randomise", "randomize"):
            randomise = True
            continue
        axis, sep, sev = item.partition("=")
        axis = axis.strip()
        if not sep:
            raise ValueError(
                f"shift item {item!r}: expected AXIS=SEVERITY (e.g. camera=strong) or 'randomise'"
            )
        if axis == "clean_fraction":
            try:
                values[axis] = float(sev)
            except ValueError:
                raise ValueError(f"shift item {item!r}: clean_fraction must be a number in [0, 1]") from None
            continue
        for a in all_axes if axis == "all" else check_axes((axis,)):
            values[a] = severity_value(sev, f"shift.{a}")
    return ShiftConfig(**values, randomise=randomise)


def shift_rng(seed: int, episode: int, stream: int) -> np.random.Generator:
    """The generator of shift ``stream`` (an axis index, or ``len(SHIFT_AXES)`` for the randomised
    severities) in episode ``episode`` after a reset with ``seed``; independent of the env's own."""
    return np.random.default_rng([SHIFT_SALT, int(seed), int(episode), int(stream)])


def episode_severities(cfg: ShiftConfig, seed: int, episode: int) -> dict[str, float]:
    """The severity of each shifted axis in one episode: as configured, or drawn in [0, it] with
    ``randomise`` (from :func:`shift_rng` stream ``len(SHIFT_AXES)``)."""
    sev = cfg.severities()
    if not cfg.randomise or not sev:
        return sev
    rng = shift_rng(seed, episode, len(SHIFT_AXES))
    draws = rng.uniform(0.0, 1.0, len(SHIFT_AXES))  # one per axis, whichever are on
    if cfg.clean_fraction and rng.uniform() < cfg.clean_fraction:  # drawn after: the severities stay
        return {}
    return {a: float(draws[SHIFT_AXES.index(a)] * s) for a, s in sev.items()}


def unit_vector(rng: np.random.Generator, dim: int = 3) -> np.ndarray:
    """A direction uniform on the unit sphere, (dim,)."""
    v = rng.normal(size=dim)
    return v / np.linalg.norm(v)


def axis_angle_quat(axis: np.ndarray, angle: float) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation by ``angle`` radians about unit ``axis`` (3,)."""
    return np.array([math.cos(angle / 2), *(math.sin(angle / 2) * np.asarray(axis, float))])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of (w, x, y, z) quaternions."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """``v`` (3,) rotated by ``angle`` radians about unit ``axis`` (Rodrigues)."""
    v, k = np.asarray(v, float), np.asarray(axis, float)
    return v * math.cos(angle) + np.cross(k, v) * math.sin(angle) + k * (k @ v) * (1 - math.cos(angle))


def kelvin_rgb(kelvin: float) -> np.ndarray:
    """Relative RGB (3,) of a black body at ``kelvin`` (Tanner Helland's fit), 1 at 6500 K's channels."""

    def raw(k: float) -> np.ndarray:
        t = k / 100.0
        r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
        g = (
            99.4708025861 * math.log(t) - 161.1195681661
            if t <= 66
            else 288.1221695283 * (t - 60) ** -0.0755148492
        )
        b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
        return np.clip(np.array([r, g, b]), 0.0, 255.0)

    return raw(kelvin) / raw(NOMINAL_K)


def light_kelvin(severity: float, warm: bool) -> float:
    """Colour temperature at ``severity``: from 6500 K towards the warm or cool levels, linear in mired."""
    levels = LIGHT_WARM_K if warm else LIGHT_COOL_K
    mired = magnitude(tuple(1e6 / k - 1e6 / NOMINAL_K for k in levels), severity)  # type: ignore[arg-type]
    return 1e6 / (1e6 / NOMINAL_K + mired)


@dataclass(frozen=True)
class EpisodeShift:
    """The shift one episode realised (what :class:`TabletopEnv` applied), for tests and reports.

    Attributes:
        severities: ``{axis: severity}`` of the axes shifted this episode.
        camera_offset: (3,) metres added to the front camera's position.
        camera_rotation: (axis (3,), angle radians) applied in the camera's own frame.
        light_scale: factor on every light's diffuse and ambient.
        light_tilt: (axis (3,), angle radians) turning the top light's direction.
        light_kelvin: colour temperature, K.
        table_rgb_offset: (3,) added to the table's RGB (before clipping to [0, 1]).
        table_texture: whether the table wears the checker texture.
        object_scale: factor on every object's size.
        distractors_added: extra distractors asked for (the env reports those placed).
        gripper_offset: (dx, dy, dz) metres and dyaw radians added to the gripper's start pose.
        image_blur_sigma, image_noise_std, image_jpeg_quality: blur (px of a 64 px image), noise
            (levels of 255), JPEG quality (None: not compressed).
        language_set: the wording set of the instruction ("canonical" when not shifted).
    """

    severities: dict[str, float]
    camera_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    camera_rotation: tuple[tuple[float, float, float], float] = ((0.0, 0.0, 1.0), 0.0)
    light_scale: float = 1.0
    light_tilt: tuple[tuple[float, float, float], float] = ((0.0, 0.0, 1.0), 0.0)
    light_kelvin: float = NOMINAL_K
    table_rgb_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    table_texture: bool = False
    object_scale: float = 1.0
    distractors_added: int = 0
    gripper_offset: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    image_blur_sigma: float = 0.0
    image_noise_std: float = 0.0
    image_jpeg_quality: int | None = None
    language_set: str = "canonical"

    @property
    def image_active(self) -> bool:
        """Whether observations are degraded."""
        return self.image_blur_sigma > 0 or self.image_noise_std > 0 or self.image_jpeg_quality is not None


def sample_episode_shift(cfg: ShiftConfig, seed: int, episode: int) -> EpisodeShift:
    """Draw one episode's shift from the per-axis generators (:func:`shift_rng`); clean: all defaults."""
    sev = episode_severities(cfg, seed, episode)
    out: dict[str, Any] = {"severities": sev}

    def rng(axis: str) -> np.random.Generator:
        return shift_rng(seed, episode, SHIFT_AXES.index(axis))

    if sev.get("camera", 0) > 0:
        s, g = sev["camera"], rng("camera")
        out["camera_offset"] = tuple(unit_vector(g) * magnitude(CAMERA_TRANSLATION_CM, s) / 100.0)
        out["camera_rotation"] = (tuple(unit_vector(g)), math.radians(magnitude(CAMERA_ROTATION_DEG, s)))
    if sev.get("lighting", 0) > 0:
        s, g = sev["lighting"], rng("lighting")
        sign = 1.0 if g.random() < 0.5 else -1.0
        out["light_scale"] = 1.0 + sign * magnitude(LIGHT_INTENSITY_CHANGE, s)
        out["light_tilt"] = (tuple(unit_vector(g)), math.radians(magnitude(LIGHT_DIRECTION_DEG, s)))
        out["light_kelvin"] = light_kelvin(s, warm=bool(g.random() < 0.5))
    if sev.get("table", 0) > 0:
        s, g = sev["table"], rng("table")
        out["table_rgb_offset"] = tuple(unit_vector(g) * magnitude(TABLE_RGB_DISTANCE, s))
        out["table_texture"] = s >= TABLE_TEXTURE_FROM
    if sev.get("object_size", 0) > 0:
        s, g = sev["object_size"], rng("object_size")
        sign = 1.0 if g.random() < 0.5 else -1.0
        out["object_scale"] = 1.0 + sign * magnitude(OBJECT_SCALE_CHANGE, s)
    if sev.get("distractors", 0) > 0:
        level = discrete_level(sev["distractors"])
        out["distractors_added"] = DISTRACTORS_ADDED[level - 1] if level else 0
    if sev.get("gripper_start", 0) > 0:
        s, g = sev["gripper_start"], rng("gripper_start")
        phi = float(g.uniform(-math.pi, math.pi))
        d = magnitude(GRIPPER_START_XY_CM, s) / 100.0
        dz = magnitude(GRIPPER_START_Z_CM, s) / 100.0 * (1.0 if g.random() < 0.5 else -1.0)
        dyaw = math.radians(magnitude(GRIPPER_START_YAW_DEG, s)) * (1.0 if g.random() < 0.5 else -1.0)
        out["gripper_offset"] = (d * math.cos(phi), d * math.sin(phi), dz, dyaw)
    if sev.get("image", 0) > 0:
        s = sev["image"]
        out["image_blur_sigma"] = magnitude(IMAGE_BLUR_SIGMA_PX, s)
        out["image_noise_std"] = magnitude(IMAGE_NOISE_STD, s)
        loss = magnitude(tuple(100.0 - q for q in IMAGE_JPEG_QUALITY), s)  # type: ignore[arg-type]
        out["image_jpeg_quality"] = round(100.0 - loss)
    if sev.get("language", 0) > 0:
        level = discrete_level(sev["language"])
        out["language_set"] = LANGUAGE_SETS[level - 1] if level else "canonical"
    return EpisodeShift(**out)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) uint8 blurred by a separable Gaussian of ``sigma`` pixels (edges reflected), float64."""
    x = img.astype(np.float64)
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        x = sum(k[i] * np.take(xp, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))  # type: ignore[assignment]
    return x


def degrade_image(img: np.ndarray, shift: EpisodeShift, rng: np.random.Generator) -> np.ndarray:
    """One camera frame through the image shift: blur (sigma scaled by side / 64), additive Gaussian
    noise (drawn from ``rng``), JPEG round trip. (H, W, 3) uint8 -> (H, W, 3) uint8."""
    x = gaussian_blur(img, shift.image_blur_sigma * img.shape[0] / 64.0)
    if shift.image_noise_std > 0:
        x = x + rng.normal(0.0, shift.image_noise_std, x.shape)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if shift.image_jpeg_quality is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(shift.image_jpeg_quality))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8)
    return out


def shift_grid(
    axes: tuple[str, ...], severities: tuple[float, ...] = (1.0, 2.0, 3.0)
) -> list[tuple[str, float]]:
    """(axis, severity) of every shifted condition, axis-major."""
    check_axes(axes)
    return [(a, float(s)) for a in axes for s in severities]


__all__ = [
    "MAX_OBJECTS",
    "RANDOMISABLE_AXES",
    "SEVERITY_LEVELS",
    "SEVERITY_NAMES",
    "SHIFT_AXES",
    "EpisodeShift",
    "ShiftConfig",
    "check_axes",
    "degrade_image",
    "episode_severities",
    "magnitude",
    "parse_axes",
    "parse_shift",
    "sample_episode_shift",
    "shift_grid",
    "shift_rng",
]
