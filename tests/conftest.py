import os
from pathlib import Path

import pytest

# Must be set before the first `import mujoco` anywhere in the test session.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the LeRobot layout (``vla_testdata``), written once per session."""
    # Imported here, not above: vla_testdata imports mmvla, which must come after the variables above.
    from vla_testdata import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "tiny")
