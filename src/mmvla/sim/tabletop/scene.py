"""The tabletop scene as hand-written MJCF, generated from a small Python template.

World frame: the table top is the plane z = 0; +x points to the right of the front camera's image,
+y away from the front camera, +z up. Units: metres, kilograms, seconds, radians.

The model never changes shape after compilation. It holds a pool of ``POOL_PER_SHAPE`` free bodies per
shape; an episode activates some of them (moves them onto the table, recolours them through
``model.geom_rgba`` and enables their contacts) and parks the rest far away, weightless
(``body_gravcomp = 1``) and without contacts, out of every camera's view.

The gripper: a free-floating "hand" body welded to a mocap body (the controller moves the mocap), with
two slide fingers coupled by a joint equality and driven by one position actuator. The hand frame's
origin is the *grasp point*: midway between the finger pads, 15 mm above the finger tips.
"""

from __future__ import annotations

import math

import numpy as np

from mmvla.sim.tabletop.tasks import SHAPES

# ---- geometry (metres) ------------------------------------------------------------------------------
CUBE_HALF = 0.0225  # 4.5 cm cube
CYLINDER_RADIUS = 0.0225  # 4.5 cm diameter
CYLINDER_HALF_HEIGHT = 0.0225  # 4.5 cm tall
SLAB_HALF = (0.040, 0.0225, 0.014)  # 8 x 4.5 x 2.8 cm
POOL_PER_SHAPE = 5

# Half sizes (x, y, z) of each shape's bounding box in its own frame.
SHAPE_HALF_EXTENTS: dict[str, tuple[float, float, float]] = {
    "cube": (CUBE_HALF, CUBE_HALF, CUBE_HALF),
    "cylinder": (CYLINDER_RADIUS, CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT),
    "slab": SLAB_HALF,
}
# Radius of the footprint's circumscribed circle, used to keep objects apart.
SHAPE_RADIUS: dict[str, float] = {
    "cube": CUBE_HALF * math.sqrt(2.0),
    "cylinder": CYLINDER_RADIUS,
    "slab": math.hypot(SLAB_HALF[0], SLAB_HALF[1]),
}
# Rotational symmetry of the footprint about z (radians): a grasp yaw is defined modulo this.
SHAPE_YAW_PERIOD: dict[str, float] = {"cube": math.pi / 2, "cylinder": 0.0, "slab": math.pi}

FINGER_HALF = (0.012, 0.005, 0.026)  # x (width), y (thickness, the closing direction), z (length)
FINGER_CENTER_Z = 0.011  # finger geom centre above the grasp point; tips are 15 mm below it
FINGER_TIP_BELOW = FINGER_HALF[2] - FINGER_CENTER_Z  # 0.015
FINGER_MAX = 0.043  # max half gap between the pads (joint range [0, FINGER_MAX]); full gap 8.6 cm
PALM_HALF = (0.015, 0.015, 0.010)  # small, so it hides little of the scene from the front camera
PALM_CENTER_Z = FINGER_CENTER_Z + FINGER_HALF[2] + PALM_HALF[2]

# ---- physics ---------------------------------------------------------------------------------------
TIMESTEP = 0.0025  # seconds per physics step
SUBSTEPS = 20  # physics steps per control step
CONTROL_DT = TIMESTEP * SUBSTEPS  # 0.05 s: 20 Hz control

# ---- cameras ---------------------------------------------------------------------------------------
FRONT_CAMERA_POS = (0.0, -0.34, 0.50)
FRONT_CAMERA_TARGET = (0.0, 0.015, 0.0)
FRONT_CAMERA_FOVY = 36.0
# The wrist camera sits inside the palm, 7.5 cm above the grasp point, looking straight down between the
# fingers (image right = hand +x, image up = hand +y, like the front camera at yaw 0). The palm is in
# geom group PALM_GROUP, which the wrist camera's render hides, so the camera sees through it.
WRIST_CAMERA_Z = 0.075
WRIST_CAMERA_FOVY = 80.0
PALM_GROUP = 1

TABLE_RGBA = (0.50, 0.50, 0.50, 1.0)
# The table's checker texture of the table shift (mmvla.sim.tabletop.shift): unused by the clean scene.
TABLE_CHECKER_MATERIAL = "table_checker"
TABLE_CHECKER_SQUARE = 0.05  # metres per square
GRIPPER_RGBA = (0.15, 0.15, 0.15, 1.0)
FINGER_RGBA = (0.30, 0.30, 0.30, 1.0)


def parking_position(index: int) -> tuple[float, float, float]:
    """Where pool object ``index`` waits while unused: far from the table and every camera."""
    return (2.0 + 0.2 * index, 2.0, 0.5)


def _look_at_xyaxes(pos: tuple[float, float, float], target: tuple[float, float, float]) -> str:
    """MJCF ``xyaxes`` for a camera at ``pos`` looking at ``target`` with image-right = world +x."""
    back = np.asarray(pos, float) - np.asarray(target, float)
    z = back / np.linalg.norm(back)  # camera looks along -z
    x = np.array([1.0, 0.0, 0.0])
    x = x - z * (x @ z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return " ".join(f"{v:.6f}" for v in (*x, *y))


def _fmt(v: tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{x:g}" for x in v)


def object_body_name(shape: str, k: int) -> str:
    """Name of the ``k``-th pool body (and its geom) of ``shape``."""
    return f"{shape}{k}"


def _object_xml(shape: str, k: int, index: int) -> str:
    name = object_body_name(shape, k)
    pos = _fmt(parking_position(index))
    if shape == "cube":
        geom = f'type="box" size="{_fmt((CUBE_HALF,) * 3)}"'
    elif shape == "cylinder":
        geom = f'type="cylinder" size="{CYLINDER_RADIUS:g} {CYLINDER_HALF_HEIGHT:g}"'
    elif shape == "slab":
        geom = f'type="box" size="{_fmt(SLAB_HALF)}"'
    else:  # pragma: no cover - SHAPES is fixed
        raise ValueError(shape)
    return (
        f'    <body name="{name}" pos="{pos}" gravcomp="1">\n'
        f'      <freejoint name="{name}"/>\n'
        f'      <geom name="{name}" class="object" {geom}/>\n'
        f"    </body>\n"
    )


def build_mjcf(offscreen_size: int = 256) -> str:
    """The scene's MJCF text; ``offscreen_size`` is the largest image side any renderer will use."""
    size = max(int(offscreen_size), 64)
    objects = []
    index = 0
    for shape in SHAPES:
        for k in range(POOL_PER_SHAPE):
            objects.append(_object_xml(shape, k, index))
            index += 1
    front_axes = _look_at_xyaxes(FRONT_CAMERA_POS, FRONT_CAMERA_TARGET)
    return f"""<mujoco model="mmvla_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <statistic extent="1" center="0 0 0.1"/>
  <option timestep="{TIMESTEP:g}" cone="elliptic" impratio="10" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{size}" offheight="{size}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.55 0.55 0.55" specular="0 0 0"/>
    <map znear="0.005" zfar="20"/>
  </visual>
  <asset>
    <texture name="{TABLE_CHECKER_MATERIAL}" type="2d" builtin="checker" rgb1="1 1 1" rgb2="0.55 0.55 0.55"
             width="64" height="64"/>
    <material name="{TABLE_CHECKER_MATERIAL}" texture="{TABLE_CHECKER_MATERIAL}" texuniform="true"
              texrepeat="{1 / (2 * TABLE_CHECKER_SQUARE):g} {1 / (2 * TABLE_CHECKER_SQUARE):g}"/>
  </asset>
  <default>
    <geom solref="0.005 1" solimp="0.95 0.99 0.001"/>
    <default class="object">
      <geom condim="4" friction="0.6 0.01 0.0005" density="600"/>
    </default>
    <default class="finger">
      <geom type="box" condim="4" friction="2 0.02 0.001" mass="0.03" rgba="{_fmt(FINGER_RGBA)}"/>
    </default>
  </default>
  <worldbody>
    <light name="top" directional="true" pos="0 0 1" dir="0.2 0.3 -1" castshadow="false"
           diffuse="0.45 0.45 0.45" specular="0 0 0"/>
    <geom name="table" type="plane" size="0.6 0.6 0.01" rgba="{_fmt(TABLE_RGBA)}"
          friction="0.6 0.01 0.0005" condim="4"/>
    <camera name="front" pos="{_fmt(FRONT_CAMERA_POS)}" xyaxes="{front_axes}" fovy="{FRONT_CAMERA_FOVY:g}"/>
    <body name="mocap" mocap="true" pos="0 0 0.15"/>
    <body name="hand" pos="0 0 0.15" gravcomp="1">
      <freejoint name="hand"/>
      <geom name="palm" type="box" size="{_fmt(PALM_HALF)}" pos="0 0 {PALM_CENTER_Z:g}" mass="0.3"
            rgba="{_fmt(GRIPPER_RGBA)}" group="{PALM_GROUP}"/>
      <site name="grasp" pos="0 0 0" size="0.004" rgba="1 1 1 0"/>
      <camera name="wrist" pos="0 0 {WRIST_CAMERA_Z:g}" fovy="{WRIST_CAMERA_FOVY:g}"/>
      <body name="finger_l" gravcomp="1">
        <joint name="finger_l" type="slide" axis="0 1 0" range="0 {FINGER_MAX:g}" damping="4" armature="0.01"/>
        <geom name="finger_l" class="finger" size="{_fmt(FINGER_HALF)}"
              pos="0 {FINGER_HALF[1]:g} {FINGER_CENTER_Z:g}"/>
      </body>
      <body name="finger_r" gravcomp="1">
        <joint name="finger_r" type="slide" axis="0 -1 0" range="0 {FINGER_MAX:g}" damping="4" armature="0.01"/>
        <geom name="finger_r" class="finger" size="{_fmt(FINGER_HALF)}"
              pos="0 {-FINGER_HALF[1]:g} {FINGER_CENTER_Z:g}"/>
      </body>
    </body>
{"".join(objects)}  </worldbody>
  <contact>
    <exclude body1="finger_l" body2="finger_r"/>
  </contact>
  <equality>
    <weld name="hand_weld" body1="mocap" body2="hand" solref="0.01 1"/>
    <joint name="finger_coupling" joint1="finger_r" joint2="finger_l" polycoef="0 1 0 0 0"/>
  </equality>
  <actuator>
    <position name="gripper" joint="finger_l" kp="500" ctrlrange="0 {FINGER_MAX:g}" forcerange="-25 25"/>
  </actuator>
</mujoco>
"""
