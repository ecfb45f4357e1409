"""Results as a ledger: every benchmark's files are stamped (commit, data sha256) by one writer, and each run adds a row
to results/runs.csv; the committed ledger names only files that exist."""

import csv
import json
import re

from benchmarks import common

RESULTS = common.BENCH_DIR / "results"


def test_write_results_stamps_the_files_and_appends_one_row_per_run(tmp_path):
    data = {"benchmark": "quality_curve", "command": "python -m benchmarks.quality_curve", "date": "2026-12-07T10:00:00",
            "machine": "m", "model": "tiny", "curve": [{"steps": 8, "valid": 50.0, "protocol_correct": 12.5}],
            "curve_settings": {"learning_rate": 0.002, "batch_size": 8, "rank": 16, "seed": 3407}}
    common.write_results(tmp_path, "quality_curve", dict(data), "### table", raw={"curve": {8: [{"answer": "x"}]}})
    written = json.loads((tmp_path / "quality_curve.json").read_text())
    expected = common.stamp()
    assert written["stamp"]["data_sha256"] == expected["data_sha256"] and re.fullmatch(r"[0-9a-f]{64}",
                                                                                        expected["data_sha256"])
    assert written["stamp"]["commit"] == expected["commit"]
    assert (tmp_path / "quality_curve.md").read_text().rstrip().endswith(common.stamp_line(written["stamp"]))
    assert json.loads((tmp_path / "raw" / "quality_curve.json").read_text()) == {"curve": {"8": [{"answer": "x"}]}}

    common.write_results(tmp_path, "quality_curve", dict(data, date="2026-12-08T10:00:00"), "### table")
    rows = list(csv.DictReader((tmp_path / common.LEDGER).open()))
    assert [r["date"] for r in rows] == ["2026-12-07 10:00", "2026-12-08 10:00"]  # appended, the first kept
    assert rows[0]["protocol_correct"] == "12.5" and rows[0]["steps"] == "8" and rows[0]["data_sha256"]
    assert rows[0]["files"] == "quality_curve.json quality_curve.md"
    assert rows[0]["rerun"] and rows[0]["command"] == "python -m benchmarks.quality_curve"  # as the committed ledger asks


def test_a_benchmark_that_stamped_itself_is_not_stamped_twice(tmp_path):
    own = {"commit": "c" * 40, "tree_changed": False, "data": "d", "data_sha256": "a" * 64}
    markdown = "### table\n\n" + common.stamp_line(own)
    common.write_results(tmp_path, "reliability", {"benchmark": "reliability", "stamp": own}, markdown)
    assert json.loads((tmp_path / "reliability.json").read_text())["stamp"] == own
    assert (tmp_path / "reliability.md").read_text().count("data sha256") == 1


def test_the_stamp_hashes_the_data_it_is_given(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"a": 1}\n')
    first = common.stamp(tmp_path)["data_sha256"]
    (tmp_path / "train.jsonl").write_text('{"a": 2}\n')
    assert common.stamp(tmp_path)["data_sha256"] != first != common.stamp()["data_sha256"]


def test_the_committed_ledger_names_only_files_that_exist():
    rows = list(csv.DictReader((RESULTS / common.LEDGER).open()))
    assert rows and list(rows[0]) == list(common.LEDGER_COLUMNS)
    assert [r["date"] for r in rows] == sorted(r["date"] for r in rows)
    for row in rows:
        assert row["benchmark"] and row["machine"] and row["command"] and row["rerun"], row
        for name in row["files"].split():
            assert (RESULTS / name).is_file(), (row["date"], name)


def test_every_committed_result_json_has_its_row():
    named = {name for row in csv.DictReader((RESULTS / common.LEDGER).open()) for name in row["files"].split()}
    assert {p.name for p in RESULTS.glob("*.json")} <= named


def test_every_committed_result_names_its_commit_and_data():
    """A number without its inputs cannot be rerun: each result JSON carries a full commit and the data's sha256, and its
    table says them (files written before stamping say they were stamped after the fact, from their recording commit)."""
    for path in sorted(RESULTS.glob("*.json")):
        stamped = json.loads(path.read_text()).get("stamp") or {}
        assert re.fullmatch(r"[0-9a-f]{40}", stamped.get("commit", "")), path.name
        assert re.fullmatch(r"[0-9a-f]{64}", stamped.get("data_sha256", "")), path.name
        table = path.with_suffix(".md")
        if table.exists():
            text = table.read_text()
            assert f"{stamped['commit'][:10]}" in text and f"data sha256 {stamped['data_sha256'][:12]}" in text, table.name
    for table in sorted(RESULTS.glob("*.md")):
        assert re.search(r"commit [0-9a-f]{10}.*, data sha256 [0-9a-f]{12}", table.read_text()), table.name
