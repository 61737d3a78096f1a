"""``--engine ray`` on a local Ray: a hive-partitioned Parquet dataset through
an actor pool gives the local engine's rows and predictions, in its order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_dataset
import pyarrow.parquet as pq
import pytest

from tests.jobs.conftest import cancer_table
from tests.jobs.test_local import batch

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def partitioned(root: Path) -> pa.Table:
    """Three partitions (shard=a, b, c) of the rows; the rows in the order a reader of it meets them."""
    table = cancer_table(3)
    shard = pc.if_else(pc.less(table.column("id"), 600), "a", pc.if_else(pc.less(table.column("id"), 1200), "b", "c"))
    pq.write_to_dataset(table.append_column("shard", shard), root, partition_cols=["shard"])
    return table


def test_a_partitioned_dataset_gives_the_local_engines_output(
    local_ray: None, example_repo: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    table = partitioned(tmp_path / "dataset")
    single = tmp_path / "rows.parquet"
    pq.write_table(table, single)
    local = tmp_path / "local.parquet"
    assert batch("breast_cancer", "--repo", example_repo, "--input", single, "--output", local, "--no-progress") == 0
    out = tmp_path / "predicted"
    code = batch("breast_cancer", "--repo", example_repo, "--engine", "ray", "--input", tmp_path / "dataset",
                 "--output", out, "--batch-size", 256, "--ray-actor-cpus", 0.5)  # fmt: skip
    err = capfd.readouterr().err
    assert code == 0, err
    # Ray Data's plan and progress lines (INFO, on stderr off a terminal) are not the job's output
    assert "Execution plan" not in err and "Total Progress" not in err, err
    expected = pq.read_table(local)
    found = pq.read_table(out / "part-000000.parquet")
    assert found.column("id").to_pylist() == expected.column("id").to_pylist()  # the order is kept
    assert found.select(expected.column_names).equals(expected)
    assert set(found.column("shard").to_pylist()) == {"a", "b", "c"}


def test_bad_rows_fail_the_job_or_are_left_out(
    local_ray: None, example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = cancer_table()
    area = table.column("mean area").to_pylist()
    area[5] = None
    source = tmp_path / "rows.parquet"
    pq.write_table(table.set_column(3, "mean area", pa.array(area)), source)
    argv = ["breast_cancer", "--repo", example_repo, "--engine", "ray", "--input", source, "--batch-size", 100]
    assert batch(*argv, "--output", tmp_path / "failed") == 1
    assert "row 6 of the batch: column 'mean area': missing value" in capsys.readouterr().err
    assert batch(*argv, "--output", tmp_path / "skipped", "--on-error", "skip") == 0
    assert "left out 1 bad row(s)" in capsys.readouterr().err
    ids = pa_dataset.dataset(tmp_path / "skipped", format="parquet").to_table().column("id").to_pylist()
    assert ids == [i for i in range(569) if i != 5]
