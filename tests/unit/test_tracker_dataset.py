"""The dataset a training run logs to MLflow: its source resolved without noise in the run's log."""

from __future__ import annotations

import warnings

from trainer.training.tracker import dataset_source

BUNDLED = "trainer/data/bundled/SPY.csv"


def test_a_local_data_path_is_a_local_source_and_logs_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source = dataset_source(BUNDLED)
    assert type(source).__name__ == "LocalArtifactDatasetSource"
    assert source.to_dict()["uri"] == BUNDLED


def test_an_s3_uri_is_an_s3_source():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source = dataset_source("s3://market-data/spy.csv")
    assert type(source).__name__ == "S3ArtifactDatasetSource"
    assert source.to_dict()["uri"] == "s3://market-data/spy.csv"
