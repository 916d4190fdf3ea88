"""The MuJoCo tabletop: scene, Gymnasium environment, language tasks and scripted expert.

What a policy needs to know (details in :mod:`mmvla.sim.tabletop.env`, :mod:`mmvla.sim.tabletop.expert`):

- Control at 20 Hz (``scene.CONTROL_DT`` = 50 ms, 20 physics substeps of 2.5 ms).
- Action (7,) in [-1, 1]: dx, dy, dz move the end-effector target by ``action * 0.02`` m per step
  (world frame); droll, dpitch are ignored (top-down gripper); dyaw turns it by ``action * 15``
  degrees; gripper is an absolute target, +1 open ... -1 closed.
- State (5,) float32: grasp-point x, y, z in metres (table top z = 0, +x = right in the front image,
  +y = away from the front camera), yaw in radians, finger gap in metres (0 .. 0.086).
- Cameras: "front" looks down at the 26 x 20 cm object workspace from the front at ~34 degrees from
  vertical; "wrist" looks straight down from 7.5 cm above the grasp point, fingers at the top and
  bottom of its image (hand +y up, +x right: the same orientation as the front image at yaw 0).
- Episodes: the scripted expert takes ~25 steps (pick), ~28 (push), ~48 (place) without noise;
  time limits 80 / 80 / 150 steps; ``terminated`` at the first success.
- Recording: execute ``ScriptedExpert.act(obs)``, store ``expert.last_clean_action`` (DART-style).

Nothing is imported here: ``tasks``, ``wordings``, ``config`` and ``scene`` are pure Python; ``env`` and
``expert`` import MuJoCo.
"""
