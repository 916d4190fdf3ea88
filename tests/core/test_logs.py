"""mmvla.core.logs: the one reader of the training and pre-training CSV logs."""

from __future__ import annotations

import pytest

from mmvla.core.io import atomic_write_csv
from mmvla.core.logs import read_log, read_log_rows
from mmvla.training.pretrain import LOG_FIELDS as PRETRAIN_FIELDS
from mmvla.training.trainer import LOG_FIELDS


def test_training_log_columns_skip_empty_cells(tmp_path) -> None:
    rows = [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "grad_vision": 0.5 * s} for s in (5, 10, 15)]
    atomic_write_csv(tmp_path / "log.csv", LOG_FIELDS, rows)
    log = read_log(tmp_path / "log.csv")
    assert list(log) == list(LOG_FIELDS)  # every header column, in order
    assert log["step"] == [5.0, 10.0, 15.0] and log["loss"] == [1 / 5, 1 / 10, 1 / 15]
    assert log["loss_state"] == [] and not log.get("grad_language")  # a column the run does not fill
    assert log["grad_vision"] == [2.5, 5.0, 7.5]


def test_pretrain_log_columns(tmp_path) -> None:
    rows = [{"step": 2, "loss": 3.0, "logit_scale": 14.3, "batch_acc": 0.25}]
    atomic_write_csv(tmp_path / "log.csv", PRETRAIN_FIELDS, rows)
    log = read_log(tmp_path / "log.csv")
    assert log["logit_scale"] == [14.3] and log["batch_acc"] == [0.25] and log["elapsed_s"] == []


def test_rows_up_to_a_step_for_resuming(tmp_path) -> None:
    assert read_log_rows(tmp_path / "none.csv") == []  # a fresh run has no log yet
    rows = [{"step": s, "loss": float(s)} for s in (5, 10, 15)]
    atomic_write_csv(tmp_path / "log.csv", LOG_FIELDS, rows)
    assert read_log_rows(tmp_path / "log.csv", upto=10) == [
        {"step": 5.0, "loss": 5.0},
        {"step": 10.0, "loss": 10.0},
    ]
    assert len(read_log_rows(tmp_path / "log.csv")) == 3
    with pytest.raises(FileNotFoundError, match=r"none\.csv"):
        read_log(tmp_path / "none.csv")
