"""mmvla: multimodal vision-language-action learning for robot control.

Importing it registers the Gymnasium ids ``mmvla/Tabletop-v0``, ``mmvla/MetaWorld-MT10-v0`` and
``mmvla/MetaWorld-MT50-v0`` (:mod:`mmvla.sim.gym_ids`) without importing MuJoCo or touching environment variables.
"""

from mmvla.sim.gym_ids import register

__version__ = "0.1.0"

register()
