"""The run-directory layout in one place: every file and folder name a run, a demo or a comparison holds.

A training run (``mmvla train``; a demo's output directory; one comparison run) holds::

    run.json, log.csv                     the trainer's config record and log
    checkpoints/last/trainer_state.json   the resumable checkpoint (present while a run can resume)
    policy/model.safetensors              the final policy (present once training finished)
    eval/, eval_<control>/                evaluation outputs (metrics.json, episodes.json, videos/)
    summary.json, report.html             the demo's summary and the HTML report
    data/                                 the dataset, when collected into the run directory

A comparison run adds ``spec.json``, ``train_time.json``, ``latency.json`` and ``result.json``; a
comparison's output directory holds ``data/``, ``runs/<name>/`` and ``comparison.{json,md,png}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def dataset_info(data_dir: str | os.PathLike[str]) -> Path:
    """``DATA/meta/info.json``: the file a finished LeRobot dataset (from ``mmvla collect``) holds."""
    return Path(data_dir) / "meta" / "info.json"


@dataclass(frozen=True)
class RunPaths:
    """Paths inside the run directory ``root`` (nothing is created or checked)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    # --- training
    @property
    def run_config(self) -> Path:
        """``run.json``: policy + train config and dataset path, written by the trainer."""
        return self.root / "run.json"

    @property
    def log(self) -> Path:
        """``log.csv``: the trainer's log."""
        return self.root / "log.csv"

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``."""
        return self.root / "checkpoints"

    @property
    def trainer_state(self) -> Path:
        """``checkpoints/last/trainer_state.json``: present when a run can resume."""
        return self.checkpoints / "last" / "trainer_state.json"

    @property
    def policy(self) -> Path:
        """``policy/``: the final policy."""
        return self.root / "policy"

    @property
    def policy_weights(self) -> Path:
        """``policy/model.safetensors``: present once training finished."""
        return self.policy / "model.safetensors"

    # --- evaluation
    @property
    def eval(self) -> Path:
        """``eval/``: the main evaluation (metrics.json, episodes.json, videos/, wordings/)."""
        return self.root / "eval"

    def eval_control(self, control: str) -> Path:
        """``eval_<control>/``: one blind control's evaluation (``control="none"``: :attr:`eval`)."""
        return self.eval if control == "none" else self.root / f"eval_{control}"

    # --- outputs of the pipeline
    @property
    def data(self) -> Path:
        """``data/``: a dataset collected into the run directory."""
        return self.root / "data"

    @property
    def summary(self) -> Path:
        """``summary.json``: the demo's key numbers (read by the report)."""
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        """``report.html``."""
        return self.root / "report.html"

    # --- one comparison run (mmvla.pipeline.run_variant)
    @property
    def spec(self) -> Path:
        """``spec.json``: what a comparison run was trained with."""
        return self.root / "spec.json"

    @property
    def train_time(self) -> Path:
        """``train_time.json``: a comparison run's training time, once training finished."""
        return self.root / "train_time.json"

    @property
    def latency(self) -> Path:
        """``latency.json``: ``act()`` latency of a comparison run."""
        return self.root / "latency.json"

    @property
    def result(self) -> Path:
        """``result.json``: a comparison run's record, written last."""
        return self.root / "result.json"

    # --- a comparison's output directory
    @property
    def runs(self) -> Path:
        """``runs/``: a comparison's run directories."""
        return self.root / "runs"

    @property
    def comparison(self) -> Path:
        """``comparison.json``."""
        return self.root / "comparison.json"

    @property
    def comparison_table(self) -> Path:
        """``comparison.md``."""
        return self.root / "comparison.md"

    @property
    def comparison_chart(self) -> Path:
        """``comparison.png``."""
        return self.root / "comparison.png"
