"""``import mmvla`` registers the Gymnasium ids without side effects, and environments left open at exit
print nothing (each check in a fresh interpreter)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

HAVE_METAWORLD = importlib.util.find_spec("metaworld") is not None


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
        check=False,
    )


def test_import_mmvla_imports_no_mujoco_and_sets_no_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys, mmvla, mmvla.sim, mmvla.sim.registry\n"
            "assert 'mujoco' not in sys.modules and 'metaworld' not in sys.modules, 'simulator imported'\n"
            "assert 'MUJOCO_GL' not in os.environ, os.environ['MUJOCO_GL']\n"
            "import gymnasium as gym\n"
            "assert {'mmvla/Tabletop-v0', 'mmvla/MetaWorld-MT10-v0'} <= set(gym.registry)\n"
            "assert 'mujoco' not in sys.modules and 'MUJOCO_GL' not in os.environ\n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr


def test_gym_make_after_import_mmvla() -> None:
    r = _python(
        """
        import mmvla, gymnasium as gym
        env = gym.make("mmvla/Tabletop-v0")
        obs, info = env.reset(seed=0)
        assert obs["front"].shape == (64, 64, 3), obs["front"].shape
        env.close()
        """
    )
    assert r.returncode == 0, r.stderr


def test_gymnasium_imported_first_still_gets_the_ids() -> None:
    r = _python("import gymnasium as gym, mmvla\nassert 'mmvla/Tabletop-v0' in gym.registry\n")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "env_id",
    [
        "mmvla/Tabletop-v0",
        pytest.param(
            "mmvla/MetaWorld-MT10-v0",
            marks=pytest.mark.skipif(not HAVE_METAWORLD, reason="pip install 'mmvla[metaworld]'"),
        ),
        pytest.param(
            "mmvla/MetaWorld-MT50-v0",
            marks=pytest.mark.skipif(not HAVE_METAWORLD, reason="pip install 'mmvla[metaworld]'"),
        ),
    ],
)
def test_exit_without_close_prints_nothing(env_id: str) -> None:
    r = _python(
        f"""
        import mmvla, gymnasium as gym
        env = gym.make({env_id!r})
        env.reset(seed=0)
        """
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
