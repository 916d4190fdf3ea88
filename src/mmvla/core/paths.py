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
from dataclasses import dataclass, field, fields
from pathlib import Path


def dataset_info(data_dir: str | os.PathLike[str]) -> Path:
    """``DATA/meta/info.json``: the file a finished LeRobot dataset (from ``mmvla collect``) holds."""
    return Path(data_dir) / "meta" / "info.json"


@dataclass(frozen=True)
class RunPaths:
    """Paths inside the run directory ``root`` (nothing is created or checked).

    The fields after ``root`` are filled in at construction: ``root /`` the name each docstring opens with.
    """

    root: Path

    # --- training
    run_config: Path = field(init=False, repr=False, metadata={"at": "run.json"})
    """``run.json``: policy + train config and dataset path, written by the trainer."""
    log: Path = field(init=False, repr=False, metadata={"at": "log.csv"})
    """``log.csv``: the trainer's log."""
    checkpoints: Path = field(init=False, repr=False, metadata={"at": "checkpoints"})
    """``checkpoints/``."""
    trainer_state: Path = field(
        init=False, repr=False, metadata={"at": "checkpoints/last/trainer_state.json"}
    )
    """``checkpoints/last/trainer_state.json``: present when a run can resume."""
    policy: Path = field(init=False, repr=False, metadata={"at": "policy"})
    """``policy/``: the final policy."""
    policy_weights: Path = field(init=False, repr=False, metadata={"at": "policy/model.safetensors"})
    """``policy/model.safetensors``: present once training finished."""
    # --- evaluation
    eval: Path = field(init=False, repr=False, metadata={"at": "eval"})
    """``eval/``: the main evaluation (metrics.json, episodes.json, videos/, wordings/)."""
    # --- outputs of the pipeline
    data: Path = field(init=False, repr=False, metadata={"at": "data"})
    """``data/``: a dataset collected into the run directory."""
    summary: Path = field(init=False, repr=False, metadata={"at": "summary.json"})
    """``summary.json``: the demo's key numbers (read by the report)."""
    report: Path = field(init=False, repr=False, metadata={"at": "report.html"})
    """``report.html``."""
    # --- one comparison run (mmvla.pipeline.run_variant)
    spec: Path = field(init=False, repr=False, metadata={"at": "spec.json"})
    """``spec.json``: what a comparison run was trained with."""
    train_time: Path = field(init=False, repr=False, metadata={"at": "train_time.json"})
    """``train_time.json``: a comparison run's training time, once training finished."""
    latency: Path = field(init=False, repr=False, metadata={"at": "latency.json"})
    """``latency.json``: ``act()`` latency of a comparison run."""
    result: Path = field(init=False, repr=False, metadata={"at": "result.json"})
    """``result.json``: a comparison run's record, written last."""
    # --- a comparison's output directory
    runs: Path = field(init=False, repr=False, metadata={"at": "runs"})
    """``runs/``: a comparison's run directories."""
    comparison: Path = field(init=False, repr=False, metadata={"at": "comparison.json"})
    """``comparison.json``."""
    comparison_table: Path = field(init=False, repr=False, metadata={"at": "comparison.md"})
    """``comparison.md``."""
    comparison_chart: Path = field(init=False, repr=False, metadata={"at": "comparison.png"})
    """``comparison.png``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))
        for f in fields(self):
            if "at" in f.metadata:
                object.__setattr__(self, f.name, self.root / f.metadata["at"])

    def eval_control(self, control: str) -> Path:
        """``eval_<control>/``: one blind control's evaluation (``control="none"``: :attr:`eval`)."""
        return self.eval if control == "none" else self.root / f"eval_{control}"
