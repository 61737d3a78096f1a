"""``turnout batch`` given files and paths that are wrong in the ways real ones
are: every case ends in a one-line error (exit 2) and no output, or, where
the data allows, in an output that loses nothing."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.jobs.test_local import batch, write
from turnout.jobs.columns import BadRow
from turnout.jobs.resume import Part, WorkDir


def run(example_repo: Path, source: Path, output: Path, *extra: str | int) -> int:
    return batch("breast_cancer", "--repo", example_repo, "--input", source, "--output", output, "--no-progress",
                 *map(str, extra))  # fmt: skip


def test_jsonl_values_are_never_truncated_nor_keys_dropped(
    example_repo: Path, cancer: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = cancer.slice(0, 300).to_pylist()
    for i, row in enumerate(rows):
        row["k"] = 1.5 if i == 250 else i  # whole numbers, then one that is not
    source = tmp_path / "k.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert run(example_repo, source, tmp_path / "k-out.jsonl", "--chunk-rows", 100) == 2
    assert "key 'k' in data rows 201-300 does not fit the type of its first values (int64)" in capsys.readouterr().err
    assert not (tmp_path / "k-out.jsonl").exists()

    rows = cancer.slice(0, 300).to_pylist()
    rows[250]["comment"] = "late"
    late = tmp_path / "late.jsonl"
    late.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert run(example_repo, late, tmp_path / "late-out.jsonl", "--chunk-rows", 100) == 2
    assert "data row 251 has the key 'comment', which the first 100 rows do not have" in capsys.readouterr().err
    # with the key in the first chunk, nothing is lost
    assert run(example_repo, late, tmp_path / "late-out.jsonl", "--chunk-rows", 1000) == 0
    written = [orjson.loads(line) for line in (tmp_path / "late-out.jsonl").read_bytes().splitlines()]
    assert written[250]["comment"] == "late" and len(written) == 300


def test_bad_paths_and_shapes_are_refused_before_any_work(
    example_repo: Path, cancer: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(cancer.slice(0, 50), tmp_path / "in.parquet")
    (tmp_path / "a-dir.parquet").mkdir()
    assert run(example_repo, source, tmp_path / "a-dir.parquet") == 2
    assert "is a directory; name the output file" in capsys.readouterr().err
    assert run(example_repo, source, source / "out.parquet") == 2
    assert "no such directory for the output" in capsys.readouterr().err

    duplicated = tmp_path / "twice.csv"
    header = ",".join(["mean radius", *cancer.column_names[:30]])
    duplicated.write_text(header + "\n" + ",".join(["1"] * 31) + "\n")
    assert run(example_repo, duplicated, tmp_path / "twice-out.csv") == 2
    assert "more than one column named 'mean radius'" in capsys.readouterr().err

    features = [c for c in cancer.column_names if c != "id"]
    listed = pa.table(
        {"input": pa.array([[float(v) for v in row.values()] for row in cancer.select(features).to_pylist()])}
    )
    packed = write(listed.slice(0, 20), tmp_path / "packed.parquet")
    assert run(example_repo, packed, tmp_path / "packed.csv") == 2
    assert "a CSV file cannot hold the list column(s) ['input']" in capsys.readouterr().err
    assert not list(tmp_path.glob(".packed.csv.parts"))

    assert batch("breast_cancer", "--repo", example_repo, "--engine", "ray", "--input", duplicated, "--output",
                 tmp_path / "ray-out", "--no-progress") == 2  # fmt: skip
    assert "the Ray engine reads Parquet" in capsys.readouterr().err


def test_the_output_format_follows_the_outputs_extension(example_repo: Path, cancer: pa.Table, tmp_path: Path) -> None:
    source = write(cancer.slice(0, 40), tmp_path / "in.parquet")
    assert run(example_repo, source, tmp_path / "out.csv") == 0
    text = (tmp_path / "out.csv").read_text()
    assert text.startswith('"mean radius"') and len(text.splitlines()) == 41
    assert run(example_repo, source, tmp_path / "out.jsonl") == 0
    assert len(orjson.loads((tmp_path / "out.jsonl").read_bytes().splitlines()[0])) == 31 + 3


def test_a_damaged_checkpoint_is_done_again_not_trusted(tmp_path: Path) -> None:
    """A part cut short (a crash before it reached the disk) and those after it
    count as not done; the ones before it stand."""
    work = WorkDir(tmp_path / "out.parquet")
    assert work.start({"job": 1}) is None
    for index in range(3):
        predictions = pa.table({"label": pa.array([index] * 4, pa.int64())})
        work.save(index, Part(predictions, index * 5, (BadRow(4, "why"),), 1))
    part = work.path / "part-000001.arrow"
    part.write_bytes(part.read_bytes()[:20])
    assert work.completed() == 1
    assert sorted(p.name for p in work.path.glob("part-*")) == ["part-000000.arrow"]
    loaded = work.load(0)
    assert loaded.first_row == 0 and loaded.bad == (BadRow(4, "why"),)
    assert work.start({"job": 1}) == "resuming: 1 chunk(s) done by an earlier run"
    assert pq is not None


def test_a_csv_column_that_changes_type_late_passes_through_to_csv(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An account number column, integers for 4 MiB (the reader's first block)
    and then an 'A-17': CSV to CSV carries it through as written; to Parquet,
    where the column needs one type, the job stops naming it."""
    from tests.jobs.conftest import cancer_table

    table = cancer_table(60)
    accounts = [str(i) for i in range(table.num_rows - 1)] + ["A-17"]
    accounts[1] = "NA"  # text, not a missing value, in a column the model does not read
    source = write(table.append_column("account", pa.array(accounts)), tmp_path / "accounts.csv")
    text = source.read_text().replace('"A-17"', "A-17")
    source.write_text(text)
    assert source.stat().st_size > 5 << 20
    assert run(example_repo, source, tmp_path / "scored.csv") == 0
    with (tmp_path / "scored.csv").open(newline="") as file:
        scored = list(csv.DictReader(file))
    assert len(scored) == table.num_rows
    assert scored[-1]["account"] == "A-17" and scored[0]["account"] == "0"  # the values as written
    assert scored[1]["account"] == "NA"
    assert run(example_repo, source, tmp_path / "scored.parquet") == 2
    assert "make the column uniform" in capsys.readouterr().err
