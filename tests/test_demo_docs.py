"""The committed demo report (``docs/demo``) is a true copy of a demo run: no machine's absolute
paths, its markdown is what its own ``results.json`` renders to, every figure it lists is there
(and nothing else), its mAP figure plots its table, and it shows what the report must: the
chance level, one row for the two BCE baselines at full labels, spread and intervals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tune.report import render_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs" / "demo"
#: A path from a file system root (``/work/...``, ``/tmp/...``), not a URL's or a ratio's slash.
ABSOLUTE = re.compile(r"(?<![\w:/.\])])/[A-Za-z_][\w.-]*/")


@pytest.fixture(scope="module")
def demo():
    return (json.loads((DOCS / "results.json").read_text()),
            (DOCS / "report.md").read_text())


def test_the_committed_demo_report_holds_no_absolute_path(demo):
    results, md = demo
    for name, text in (("report.md", md), ("results.json", json.dumps(results))):
        found = ABSOLUTE.findall(text)
        assert not found, (name, found[:5])
    assert not Path(results["experiment"]).is_absolute()


def test_the_committed_markdown_is_what_its_results_render_to(demo):
    results, md = demo
    assert render_markdown(results, results["figures"]) == md


def test_every_listed_figure_is_committed_and_nothing_else(demo):
    results, _ = demo
    listed = {f["path"] for f in results["figures"]}
    assert listed == {str(p.relative_to(DOCS)) for p in (DOCS / "figures").glob("*.png")}


def test_the_committed_report_shows_chance_spread_and_one_bce_row_at_full_labels(demo):
    results, md = demo
    assert results["repeats"] >= 2 and results["spread"]["supported"]
    assert all(c["chance_mAP"] is not None for c in results["columns"])
    assert "| chance (mean class prevalence of the test split) |" in md
    [eq] = results["equivalences"]
    assert eq["methods"] == ["partial_bce", "assume_negative_bce"] and eq["prob"] == 1.0
    for row in results["paired_differences"].values():
        for cell in row["cells"].values():
            assert cell.get("same_as") or cell["ci"]["method"] == "Student t"


def test_the_committed_map_figure_plots_its_table(demo):
    results, _ = demo
    data = next(f for f in results["figures"] if f["kind"] == "map_vs_proportion")["data"]
    for method, row in results["table"].items():
        cells = sorted((100 * c["prob"], row["cells"][c["task"]]) for c in results["columns"])
        offsets = data["offsets"][method]
        assert [x - offsets[f"{m:g}"] for x, (m, _) in zip(data["points"][method]["x"], cells)] \
            == pytest.approx([m for m, _ in cells])
        assert data["points"][method]["y"] == pytest.approx([c["mean"] for _, c in cells])
    assert data["segments"] == {}                   # 10% and 100% only: no line between
    assert [c["y"] for c in data["chance"]] == pytest.approx(
        [results["columns"][0]["chance_mAP"]])
