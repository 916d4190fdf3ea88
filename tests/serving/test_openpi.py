"""openpi compatibility: the real ``openpi-client`` package (PyPI, in a venv of its own: it pins numpy < 2)
drives a served mmvla policy through a full simulated episode; in-process checks of the key mapping,
resizing and openpi's error convention (a text frame)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import msgpack
import numpy as np
import pytest

from mmvla.serving.client import open_connection
from mmvla.serving.protocol import OPENPI_ND_KEY, pack_openpi, unpack
from mmvla.serving.server import PolicyServer, resize_image

from .conftest import make_obs

TOKEN = "openpi-test-token"
VENV = Path(os.environ.get("MMVLA_OPENPI_VENV", Path(tempfile.gettempdir()) / "mmvla-openpi-client-venv"))

CHILD = textwrap.dedent(
    """
    import struct, sys
    from openpi_client import action_chunk_broker, image_tools, msgpack_numpy, websocket_client_policy
    from openpi_client.runtime import environment, runtime
    from openpi_client.runtime.agents import policy_agent

    inp, out = sys.stdin.buffer, sys.stdout.buffer

    def call(msg):
        data = msgpack_numpy.packb(msg)
        out.write(struct.pack(">I", len(data)) + data)
        out.flush()
        (n,) = struct.unpack(">I", inp.read(4))
        return msgpack_numpy.unpackb(inp.read(n))

    class Env(environment.Environment):  # the simulator lives in the parent (numpy 2, MuJoCo)
        def reset(self):
            call({"op": "reset"})

        def is_episode_complete(self):
            return call({"op": "done"})["done"]

        def get_observation(self):
            self.obs = call({"op": "obs"})
            return self.obs

        def apply_action(self, action):
            size = self.size
            resized = {k: image_tools.resize_with_pad(self.obs[k], size, size) for k in ("observation/image", "observation/wrist_image")}
            call({"op": "act", "action": action["actions"], "resized": resized, "decision": action["safety"]["decision"]})

    url, token, horizon, max_steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    policy = websocket_client_policy.WebsocketClientPolicy(url, api_key=token)
    meta = policy.get_server_metadata()
    env = Env()
    env.size = meta["image_size"]
    agent = policy_agent.PolicyAgent(action_chunk_broker.ActionChunkBroker(policy, action_horizon=horizon))
    runtime.Runtime(env, agent, [], num_episodes=1, max_episode_steps=max_steps).run()
    try:
        policy.infer({"observation/image": env.obs["observation/image"], "prompt": "x"})
        error = ""
    except RuntimeError as e:  # openpi-client raises on a text frame
        error = str(e)
    call({"op": "finish", "chunk_size": meta["chunk_size"], "error": error})
    """
)


def _openpi_python() -> Path:
    """The venv's python with openpi-client installed (built once); skips if it cannot be built."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import openpi_client.websocket_client_policy, openpi_client.runtime.runtime"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True, timeout=120
        )
        pip = [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "openpi-client==0.1.2",
            "numpy<2",
            "typing_extensions",
        ]
        result = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"cannot build a venv with openpi-client at {VENV}: {e}")
    if result.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip(f"cannot install openpi-client into {VENV} (no package index?): {result.stderr[-300:]}")
    return python


def _openpi_obs(obs: dict) -> dict:
    return {
        "observation/image": obs["front"],
        "observation/wrist_image": obs["wrist"],
        "observation/state": obs["state"].astype(np.float64),  # any float dtype is accepted
        "prompt": obs["instruction"],
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_openpi_client_drives_a_full_simulated_episode(checkpoint, local_policy):
    from mmvla.sim.tabletop.env import TabletopEnv

    python = _openpi_python()
    k = local_policy.cfg.chunk_size
    env = TabletopEnv(
        cameras=("front", "wrist"), image_size=64
    )  # twice the policy's size: the server resizes
    seed = 7
    with PolicyServer.from_checkpoint(checkpoint, port=0, token=TOKEN, protocol="openpi") as srv:
        proc = subprocess.Popen(
            [str(python), "-c", CHILD, srv.url, TOKEN, str(k), "300"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None

        def reply(msg: dict) -> None:
            data = pack_openpi(msg)
            proc.stdin.write(struct.pack(">I", len(data)) + data)  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]

        obs, done, resets, steps, success = None, False, 0, 0, False
        applied: list[tuple[dict, np.ndarray, dict]] = []
        finish: dict = {}
        try:
            while True:
                head = proc.stdout.read(4)
                if len(head) < 4:
                    raise AssertionError(f"openpi client exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                msg = unpack(proc.stdout.read(struct.unpack(">I", head)[0]))
                op = msg["op"]
                if op == "reset":
                    if resets == 0:
                        obs, _ = env.reset(seed=seed)
                    resets += 1
                    reply({})
                elif op == "obs":
                    reply(_openpi_obs(obs))
                elif op == "act":
                    action = np.asarray(msg["action"], np.float32)
                    applied.append((obs, action, msg))
                    obs, _, terminated, truncated, info = env.step(action)
                    steps += 1
                    success = success or bool(info["success"])
                    done = terminated or truncated
                    reply({})
                elif op == "done":
                    reply({"done": done})
                elif op == "finish":
                    finish = msg
                    reply({})
                    break
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            env.close()
    assert done and resets == 2 and steps == len(applied) and steps >= k
    assert finish["chunk_size"] == k
    # openpi's error convention: a text frame, which openpi-client raises as RuntimeError
    assert "invalid_observation" in finish["error"] and len(finish["error"]) < 300
    # Every applied action is row (t mod k) of the chunk the local policy gives on the frame at the chunk's
    # start, resized by openpi's own resize_with_pad (the client's broker executes chunks open-loop).
    local_policy.reset()
    for t, (frame, action, msg) in enumerate(applied):
        if t % k == 0:
            local = dict(
                frame,
                front=msg["resized"]["observation/image"],
                wrist=msg["resized"]["observation/wrist_image"],
            )
            chunk = local_policy.act_chunk(local)
            decision = local_policy.safety.last.kind  # type: ignore[union-attr]
        np.testing.assert_allclose(action, chunk[t % k], rtol=0, atol=1e-6, err_msg=f"step {t}")
        assert msg["decision"] == decision
    print(f"openpi-client episode: {steps} steps, success {success}")


def test_openpi_frames_in_process(server, local_policy):
    """Byte-key msgpack-numpy arrays, nested maps, CHW images and auto-detection on the server's default port."""
    rng = np.random.default_rng(5)
    obs = make_obs(rng)

    def nd(a: np.ndarray) -> dict:
        return {OPENPI_ND_KEY: True, b"data": a.tobytes(), b"dtype": a.dtype.str, b"shape": list(a.shape)}

    frame = msgpack.packb(
        {
            "observation": {
                "image": nd(obs["front"]),
                "wrist_image": nd(np.moveaxis(obs["wrist"], -1, 0).copy()),
            },
            "observation/state": nd(obs["state"]),
            "prompt": obs["instruction"],
        },
        use_bin_type=True,
    )
    ws = open_connection(server.url)
    try:
        assert unpack(ws.recv(timeout=10))["kind"] == "metadata"
        ws.send(frame)  # first frame: detected as openpi's
        raw = ws.recv(timeout=10)
        reply = msgpack.unpackb(raw, raw=False)
        arr = reply["actions"]
        actions = np.frombuffer(arr[b"data"], np.dtype(arr[b"dtype"])).reshape(arr[b"shape"])
        local_policy.reset()
        np.testing.assert_array_equal(actions, local_policy.act_chunk(obs))
        assert set(reply["server_timing"]) >= {"infer_ms"} and reply["safety"]["decision"] == "ok"
        ws.send(msgpack.packb({"prompt": "x", "observation/image": nd(obs["front"].astype(np.float32))}))
        err = ws.recv(timeout=10)
        assert isinstance(err, str) and err.startswith("invalid_observation:") and len(err) <= 200
        ws.send(msgpack.packb({"prompt": "x", "observation/image": nd(obs["front"].astype(np.complex64))}))
        assert ws.recv(timeout=10).startswith("bad_request:")
    finally:
        ws.close()


def test_resize_follows_openpis_resize_with_pad():
    img = np.full((48, 96, 3), 200, np.uint8)  # wide: scaled to 16 x 32, padded top and bottom
    out = resize_image(img, 32)
    assert out.shape == (32, 32, 3)
    assert (out[8:24] == 200).all() and (out[:8] == 0).all() and (out[24:] == 0).all()
    same = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert resize_image(same, 32) is same
