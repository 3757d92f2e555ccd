"""The published MLC-PL results the report sets a search beside (``reference/*.csv``).

Values are kept as text, verbatim from the shipped CSV (its comment lines name the source), so
the report can print them as published.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Optional

REFERENCE_CSV = Path(__file__).resolve().parent / "reference" / "mlc_pl_published.csv"
#: The ``dataset`` of a run (canonical spelling) -> the dataset column of the published CSV.
#: ``coco`` is any COCO-format folder (the built-in Fashion-MNIST demo among them), not COCO-2014.
PUBLISHED_DATASET = {"COCO2014": "COCO2014", "VOC2007": "VOC2007"}


def read_published(path: Path = REFERENCE_CSV) -> dict:
    """The shipped CSV: its comment lines (the source) and its rows, values kept as text."""
    text = path.read_text()
    comments = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")]
    body = "\n".join(ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))
    reader = csv.reader(io.StringIO(body))
    header = next(reader)
    rows = [dict(zip(header, row)) for row in reader if row]
    return {"file": str(path), "comments": comments,
            "source": next((c for c in comments if c.lower().startswith("source")), None),
            "columns": header, "rows": rows}


def published_prob(column: str) -> Optional[float]:
    """``p10`` -> 0.1; other columns (``avg``, ``params_m``) -> None."""
    m = re.fullmatch(r"p(\d+)", column)
    return int(m.group(1)) / 100 if m else None


def dataset_note(spec) -> tuple[list[str], Optional[str], str]:
    """The experiment's datasets, the published dataset they map to (if any) and a line."""
    datasets = sorted({s.base.dataset for s in spec.studies})
    mapped = sorted({PUBLISHED_DATASET[d] for d in datasets if d in PUBLISHED_DATASET})
    if len(mapped) == 1 and len(datasets) == 1:
        return datasets, mapped[0], f"dataset {datasets[0]}: published rows for {mapped[0]}"
    if len(datasets) > 1:
        return datasets, None, (f"the studies use several datasets ({', '.join(datasets)}): "
                                f"no single set of published rows applies")
    what = f"dataset '{datasets[0]}'" if datasets else "no dataset"
    kind = "a COCO-format folder"
    data = Path(str(spec.studies[0].base.data)) if spec.studies else None
    manifest = _read_json(data / "manifest.json") if data else None
    if manifest and "Fashion-MNIST" in str(manifest.get("name", "")):
        kind = f"the built-in Fashion-MNIST demo ({manifest['name']})"
    return datasets, None, (f"{what} is {kind}, not COCO-2014 or VOC2007: no published "
                            f"rows apply")




def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
