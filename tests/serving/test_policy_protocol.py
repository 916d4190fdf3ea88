"""The local policy and the served one offer what a rollout needs: :class:`mmvla.policy.Policy`."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np

from mmvla.policy import Policy, VLAPolicy
from mmvla.serving.client import RemotePolicy

from .conftest import make_obs


def _signature(fn: object) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]  # type: ignore[arg-type]


def test_local_and_remote_policies_satisfy_the_protocol(server, local_policy: VLAPolicy) -> None:
    remote = RemotePolicy(server.url)
    try:
        rng = np.random.default_rng(0)
        for policy in (local_policy, remote):
            assert isinstance(policy, Policy)
            assert _signature(policy.reset) == _signature(Policy.reset)[1:]  # bound: no self
            assert [n for n, _ in _signature(policy.act)] == ["observation"]
            for name in ("cameras", "image_size", "state_dim", "action_dim", "chunk_size"):
                assert getattr(policy.cfg, name) == getattr(local_policy.cfg, name)
            policy.reset(chunk_mode="execute")
            action = policy.act(make_obs(rng))
            assert action.shape == (policy.cfg.action_dim,) and action.dtype == np.float32
    finally:
        remote.close()


def test_an_object_without_act_is_not_a_policy() -> None:
    class Half:
        cfg = None

        def reset(self, chunk_mode: str | None = None) -> None:
            pass

    assert not isinstance(Half(), Policy)


def test_the_client_imports_no_torch() -> None:
    """The robot-side client (and its Policy annotation) needs numpy, msgpack and websockets only."""
    code = "import sys, mmvla.serving.client; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
