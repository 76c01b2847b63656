"""`monai.bundle run training ... --tracking mlflow`: MONAI's MLflow handler logs the ε-Seg trainer's loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_bundle_configs import SCHEDULE, TINY_2D, bundle, check, make_dataset

from epsseg_monai.handlers import adapt_tracking_handlers


def test_training_with_mlflow_tracking(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'epsseg-monai[mlflow]')")
    data = make_dataset(tmp_path / "data", (40, 44))
    pytest.importorskip("sqlalchemy", reason="MLflow without its SQL store (mlflow-skinny): pip install mlflow")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"  # MLflow 3 dropped the file store
    common = {**TINY_2D, "bundle_root": str(tmp_path / "b"), "num_classes": 3, "class_names": ["x", "y", "z"]}
    result = bundle("training", "train.json", tmp_path, dataset_dir=str(data), tracking="mlflow",
                    tracking_uri=uri, experiment_name="epsseg_test", **common, **SCHEDULE)  # fmt: skip
    check(result)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("epsseg_test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert runs, "no MLflow run recorded"
    history = client.get_metric_history(runs[0].info.run_id, "train_loss")
    steps = SCHEDULE["epochs"] * SCHEDULE["epoch_length"]
    # every iteration's loss (steps 1..N), plus the epoch means that LossTermsHandler also names train_loss
    assert {m.step for m in history} >= set(range(1, steps + 1))
    assert all(torch.isfinite(torch.tensor(m.value)) for m in history)
    assert "val_mean_dice" in runs[0].data.metrics


def test_adapt_tracking_handlers_reads_a_dict_output() -> None:
    class MLFlowHandler:  # the name MONAI's handler has; only its output_transform matters here
        def __init__(self) -> None:
            self.output_transform = lambda output: ("tuple",)

    class Other:
        output_transform = staticmethod(lambda output: "own")

    tracked, other = MLFlowHandler(), Other()
    assert adapt_tracking_handlers([tracked, other]) == [tracked, other]
    loss = torch.tensor(1.5)
    assert tracked.output_transform({"loss": loss, "pred": {}}) is loss
    assert tracked.output_transform([{"loss": loss}]) == ("tuple",)  # other outputs: the original transform
    assert other.output_transform({"loss": loss}) == "own"
    first = tracked.output_transform
    adapt_tracking_handlers([tracked])
    assert tracked.output_transform is first  # not wrapped twice
