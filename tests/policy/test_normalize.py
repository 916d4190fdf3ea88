import numpy as np
import pytest
import torch

from mmvla.policy.normalize import Normalizer

STATS = {
    "observation.state": {"mean": [1.0, -2.0], "std": [2.0, 0.5], "min": [-3.0, -4.0], "max": [5.0, 0.0]},
    "action": {"mean": [0.0], "std": [0.0], "min": [-0.5], "max": [1.5]},
}


def test_closed_form_and_round_trip():
    n = Normalizer(STATS, {"observation.state": "mean_std", "action": "min_max"})
    x = torch.tensor([[3.0, -1.0]])
    np.testing.assert_allclose(n.normalize("observation.state", x).numpy(), [[1.0, 2.0]])
    a = torch.tensor([[-0.5], [1.5], [0.5]])
    np.testing.assert_allclose(n.normalize("action", a).numpy(), [[-1.0], [1.0], [0.0]])
    y = torch.randn(4, 2, dtype=torch.float32)
    torch.testing.assert_close(n.unnormalize("observation.state", n.normalize("observation.state", y)), y)
    again = Normalizer.from_dict(n.to_dict())
    torch.testing.assert_close(again.normalize("action", a), n.normalize("action", a))


def test_zero_std_does_not_divide_by_zero():
    n = Normalizer(STATS, {"action": "mean_std"})
    assert torch.isfinite(n.normalize("action", torch.ones(1, 1))).all()


def test_missing_or_malformed_statistics_name_the_feature():
    with pytest.raises(ValueError, match="'action'"):
        Normalizer({"observation.state": STATS["observation.state"]}, {"action": "mean_std"})
    with pytest.raises(ValueError, match="lack 'std'"):
        Normalizer({"action": {"mean": [0.0]}}, {"action": "mean_std"})
    with pytest.raises(ValueError, match="malformed"):
        Normalizer({"action": {"mean": [0.0, 1.0], "std": [1.0]}}, {"action": "mean_std"})
    n = Normalizer(STATS, {"action": "min_max"})
    with pytest.raises(ValueError, match="width"):
        n.normalize("action", torch.zeros(2, 3))
