import pytest

from mmvla.evaluation.evaluate import EpisodeResult, read_rephrase_file, summarise


def test_summarise_per_split_and_family():
    rs = [
        EpisodeResult("train", i, "pick" if i % 2 else "push", "x", "x", success=i < 3, length=10 + i)
        for i in range(6)
    ] + [EpisodeResult("unseen", 0, "pick", "y", "y", success=False, length=50)]
    m = summarise(rs)
    assert m["success"] == {"train": 0.5, "unseen": 0.0}
    assert m["episodes"] == {"train": 6, "unseen": 1}
    assert m["per_family"]["train"]["pick"]["success"] == pytest.approx(1 / 3)  # seeds 1, 3, 5 -> only 1
    assert m["per_family"]["train"]["push"]["success"] == pytest.approx(2 / 3)  # seeds 0, 2, 4 -> 0, 2
    assert m["length"]["train"]["mean_success"] == pytest.approx(11.0)  # lengths 10, 11, 12


def test_rephrase_file(tmp_path):
    p = tmp_path / "r.tsv"
    p.write_text("# comment\npick up the red cube\tgrab the red block\n\n")
    assert read_rephrase_file(p) == {"pick up the red cube": "grab the red block"}
    p.write_text("no tab here\n")
    with pytest.raises(ValueError, match=":1:"):
        read_rephrase_file(p)


def test_summarise_camera_failure_and_config_validation():
    from mmvla.evaluation.evaluate import EvalConfig, format_metrics

    def r(seed: int, blind: int, moving: int, over: bool) -> EpisodeResult:
        return EpisodeResult(
            "train",
            seed,
            "pick",
            "x",
            "x",
            False,
            20,
            failure_start=5,
            blind_steps=blind,
            blind_motion_steps=moving,
            handed_over=over,
        )

    m = summarise([r(0, 10, 0, False), r(1, 0, 0, True), r(2, 6, 3, False), r(3, 4, 1, False)])
    assert m["camera_failure"]["train"] == {
        "blind_steps": 5.0,
        "blind_motion_steps": 1.0,
        "moved_blind": 0.5,
        "handed_over": 0.25,
    }
    assert "handed over in 25%" in format_metrics(m)
    assert "camera_failure" not in summarise([EpisodeResult("train", 0, "pick", "x", "x", True, 3)])
    with pytest.raises(ValueError, match="camera_failure"):
        EvalConfig(camera_failure="smudge")
    with pytest.raises(ValueError, match="start_range"):
        EvalConfig(camera_failure="blank", failure_start=(0, 4))
    with pytest.raises(ValueError, match="mmvla serve"):
        EvalConfig(fallback="hold", server="ws://localhost:1")
    assert EvalConfig(camera_failure="freeze").failure().start_for(7) == EvalConfig(
        camera_failure="blank"
    ).failure().start_for(7)


@pytest.mark.parametrize("which, role", [(0, "named"), (1, "base"), (2, "other")])
def test_first_moved_role_reads_the_simulator_s_objects(which, role):
    """Move one object of a place scene in the simulator itself: the first-moved index and its role
    name that object (target 0, base 1, any other a distractor)."""
    mujoco = pytest.importorskip("mujoco")
    from mmvla.evaluation.evaluate import _first_moved, _role
    from mmvla.sim.tabletop.env import TabletopEnv

    env = TabletopEnv(cameras=(), families=("place",), num_objects=(3, 3))
    env.reset(seed=3)
    assert _first_moved(env) is None  # nothing moved yet
    obj = env.objects[which]
    env.data.qpos[obj.qpos_adr] += 0.05  # 5 cm along x
    mujoco.mj_forward(env.model, env.data)
    assert _first_moved(env) == which
    assert _role(_first_moved(env), env.base is not None) == role
    assert _role(1, has_base=False) == "other" and _role(None, True) is None
    env.close()
