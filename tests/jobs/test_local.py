"""``turnout batch`` with the local engine, through its command line: every
format in and out, bad rows, chunking, resuming after a kill."""

from __future__ import annotations

import argparse
import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tests.jobs.conftest import assert_predictions, cancer_table, features, reference
from turnout.cli import batch as batch_cli

MAIN = "import sys; from turnout.cli.batch import main; sys.exit(main())"


def write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in table.to_pylist()))
    return path


def read(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        return pa_csv.read_csv(path)
    return pa.Table.from_pylist([orjson.loads(line) for line in path.read_bytes().splitlines()])


def batch(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser()
    batch_cli.add_command(parser.add_subparsers())
    args = parser.parse_args(["batch", *map(str, argv)])
    return int(args.run(args))


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
@pytest.mark.parametrize("version", [1, 2])
def test_each_format_comes_back_with_the_predictions_onnx_runtime_gives(
    example_repo: Path, cancer: pa.Table, tmp_path: Path, suffix: str, version: int
) -> None:
    source = write(cancer, tmp_path / f"in{suffix}")
    output = tmp_path / f"out{suffix}"
    code = batch("breast_cancer", "--repo", example_repo, "--version", version, "--input", source, "--output", output,
                 "--chunk-rows", 200, "--no-progress")  # fmt: skip
    assert code == 0
    table = read(output)
    assert table.column_names == [*cancer.column_names, "label", "probabilities_0", "probabilities_1"]
    assert table.select(cancer.column_names).equals(cancer)
    assert_predictions(table, reference(example_repo, version, features(cancer)))
    assert not (tmp_path / f".out{suffix}.parts").exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_text_in_parquet_out(example_repo: Path, cancer: pa.Table, tmp_path: Path, suffix: str) -> None:
    output = tmp_path / "out.parquet"
    assert batch("breast_cancer", "--repo", example_repo, "--input", write(cancer, tmp_path / f"in{suffix}"),
                 "--output", output, "--outputs", "label", "--no-progress") == 0  # fmt: skip
    table = pq.read_table(output)
    assert table.column_names == [*cancer.column_names, "label"]
    assert table.select(cancer.column_names).equals(cancer)
    assert_predictions_label = reference(example_repo, 2, features(cancer))["label"]
    assert table.column("label").to_pylist() == assert_predictions_label.tolist()


def test_a_list_column_named_like_the_input_feeds_it(example_repo: Path, cancer: pa.Table, tmp_path: Path) -> None:
    rows = features(cancer)
    table = pa.table({"input": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), 30)})
    output = tmp_path / "out.parquet"
    assert batch("breast_cancer", "--repo", example_repo, "--input", write(table, tmp_path / "in.parquet"),
                 "--output", output, "--no-progress") == 0  # fmt: skip
    assert_predictions(pq.read_table(output), reference(example_repo, 2, rows))


def test_map_names_columns_with_other_names(example_repo: Path, cancer: pa.Table, tmp_path: Path) -> None:
    renamed = cancer.rename_columns([f"f{i}" for i in range(30)] + ["id"])
    output = tmp_path / "out.parquet"
    mapping = "input=" + ",".join(f"f{i}" for i in range(30))
    assert batch("breast_cancer", "--repo", example_repo, "--input", write(renamed, tmp_path / "in.parquet"),
                 "--output", output, "--map", mapping, "--no-progress") == 0  # fmt: skip
    assert_predictions(pq.read_table(output), reference(example_repo, 2, features(cancer)))


def test_a_missing_column_is_an_error_before_any_row_runs(
    example_repo: Path, cancer: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(cancer.drop_columns(["worst symmetry"]), tmp_path / "in.csv")
    assert batch("breast_cancer", "--repo", example_repo, "--input", source, "--output", tmp_path / "out.csv") == 2
    error = capsys.readouterr().err
    assert "input input FP32 [-1, 30]: found no column to feed it" in error
    assert "(no 'worst symmetry')" in error and "'mean radius'" in error
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / ".out.csv.parts").exists()


def spoil(cancer: pa.Table, suffix: str, tmp_path: Path, area: bool = True) -> Path:
    """The file with row 3's 'mean area' missing (unless not ``area``) and row
    1000's 'mean radius' not a number."""
    path = write(cancer_table(2), tmp_path / f"in{suffix}")
    if suffix == ".parquet":
        table = pq.read_table(path)
        areas = table.column("mean area").to_pylist()
        areas[2] = None if area else areas[2]
        radius = [str(v) for v in table.column("mean radius").to_pylist()]
        radius[999] = "big"
        table = table.set_column(3, "mean area", pa.array(areas)).set_column(0, "mean radius", pa.array(radius))
        pq.write_table(table, path)
    elif suffix == ".csv":
        lines = path.read_text().splitlines(keepends=True)
        cells = lines[3].split(",")
        cells[3] = "" if area else cells[3]
        lines[3] = ",".join(cells)
        lines[1000] = "big," + lines[1000].split(",", 1)[1]
        path.write_text("".join(lines))
    else:
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        if area:
            del rows[2]["mean area"]
        rows[999]["mean radius"] = "big"
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_bad_rows_fail_the_job_naming_them(
    example_repo: Path, cancer: pa.Table, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / f"out{suffix}"
    code = batch("breast_cancer", "--repo", example_repo, "--input", spoil(cancer, suffix, tmp_path),
                 "--output", output, "--no-progress")  # fmt: skip
    assert code == 1
    error = capsys.readouterr().err
    assert "2 bad row(s)" in error
    assert "row 3: column 'mean area': missing value" in error
    assert "row 1000: column 'mean radius': " in error and "big" in error
    assert "1-based data row numbers" in error
    assert not output.exists()


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_bad_rows_are_left_out_with_skip(
    example_repo: Path, cancer: pa.Table, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / f"out{suffix}"
    code = batch("breast_cancer", "--repo", example_repo, "--input", spoil(cancer, suffix, tmp_path),
                 "--output", output, "--on-error", "skip", "--chunk-rows", 400, "--no-progress")  # fmt: skip
    assert code == 0
    error = capsys.readouterr().err
    assert "left out 2 bad row(s)" in error and "row 3: " in error and "row 1000: " in error
    table = read(output)
    expected = cancer_table(2)
    kept = [i for i in range(expected.num_rows) if i not in (2, 999)]
    assert table.column("id").to_pylist() == kept
    good = expected.take(kept)
    assert_predictions(table, reference(example_repo, 2, features(good)))


def test_many_chunks_give_the_output_of_one(example_repo: Path, tmp_path: Path) -> None:
    source = write(cancer_table(3), tmp_path / "in.csv")
    outputs = {}
    for chunk_rows in (100_000, 97):
        outputs[chunk_rows] = tmp_path / f"out-{chunk_rows}.csv"
        assert batch("breast_cancer", "--repo", example_repo, "--input", source, "--output", outputs[chunk_rows],
                     "--chunk-rows", chunk_rows, "--no-progress") == 0  # fmt: skip
    assert filecmp.cmp(outputs[100_000], outputs[97], shallow=False)


def command(repo: Path, source: Path, output: Path, *more: str) -> list[str]:
    return [sys.executable, "-c", MAIN, "breast_cancer", "--repo", str(repo), "--input", str(source),
            "--output", str(output), "--chunk-rows", "1000", "--no-progress", *more]  # fmt: skip


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_run_killed_midway_resumes_to_the_same_bytes(example_repo: Path, tmp_path: Path, suffix: str) -> None:
    source = write(cancer_table(300), tmp_path / f"in{suffix}")  # 170,700 rows: 171 chunks
    clean, resumed = tmp_path / f"clean{suffix}", tmp_path / f"resumed{suffix}"
    subprocess.run(command(example_repo, source, clean), check=True, capture_output=True)
    parts = tmp_path / f".resumed{suffix}.parts"
    process = subprocess.Popen(command(example_repo, source, resumed), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (parts / "part-000005.arrow").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)  # another process's files: nothing to wait on but the directory
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"
    done = len(list(parts.glob("part-*.arrow")))
    assert 5 <= done < 171 and not resumed.exists()
    rerun = subprocess.run(command(example_repo, source, resumed), check=True, capture_output=True, text=True)
    assert f"resuming: {done} chunk(s) done" in rerun.stderr
    assert filecmp.cmp(clean, resumed, shallow=False)
    assert not parts.exists()


def test_a_changed_input_starts_over(example_repo: Path, cancer: pa.Table, tmp_path: Path) -> None:
    source = spoil(cancer, ".csv", tmp_path, area=False)  # a bad row in the third chunk: the first two complete
    output = tmp_path / "out.csv"
    failed = subprocess.run(
        command(example_repo, source, output, "--chunk-rows", "400"), capture_output=True, text=True
    )
    assert failed.returncode == 1 and "row 1000" in failed.stderr
    assert len(list((tmp_path / ".out.csv.parts").glob("part-*.arrow"))) == 2 and not output.exists()
    write(cancer_table(2), source)  # fixed
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    rerun = subprocess.run(command(example_repo, source, output, "--chunk-rows", "400"), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "starting over: the input or the options changed" in rerun.stderr
    clean = tmp_path / "clean.csv"
    subprocess.run(command(example_repo, source, clean, "--chunk-rows", "400"), check=True, capture_output=True)
    assert filecmp.cmp(clean, output, shallow=False)


def test_the_local_engine_and_the_cli_never_import_ray(example_repo: Path, cancer: pa.Table, tmp_path: Path) -> None:
    source = write(cancer, tmp_path / "in.csv")
    check = (
        "import sys; import turnout, turnout.cli.batch; assert 'pyarrow' not in sys.modules, 'pyarrow at import'; "
        "from turnout.cli.batch import main; code = main(sys.argv[1:]); "
        "assert 'ray' not in sys.modules, 'ray imported'; sys.exit(code)"
    )
    argv = ["breast_cancer", "--repo", str(example_repo), "--input", str(source), "--output", str(tmp_path / "o.csv")]
    done = subprocess.run([sys.executable, "-c", check, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr and "row/s" in done.stderr  # the progress bar, on stderr
