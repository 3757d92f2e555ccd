"""Command lines of ``pu-mlc evaluate`` and ``pu-mlc predict`` (library: :mod:`pu_mlc.inference`).

    pu-mlc evaluate CHECKPOINT [DATA_ROOT] [--dataset D] [--split test|val] [--json OUT]
    pu-mlc predict CHECKPOINT IMAGE... [--out scores.csv]

CHECKPOINT is a run's ``OUTPUT_DIR/checkpoints/best.pt`` (or the run's OUTPUT_DIR). User errors
are raised as :class:`pu_mlc.errors.PUMLCError`, which ``pu_mlc.cli`` prints as one line.

Both decide at the thresholds the run chose for its selected model (``LoadedRun.thresholds``:
on the validation split under the honest protocol), not at 0.5: ``evaluate`` reports OF1/CF1
there, ``predict`` writes a yes/no column per class whose header names the threshold, whether it
is global or per class, and the split it was chosen on.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from .argparse_tools import ArgumentParser
from .choices import DATASETS, DEVICES
from .engine.precision import PRECISIONS
from .errors import ConfigError


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        return value
    parse.__name__ = "int"
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _dataset(text: str) -> str:
    canon = {d.lower(): d for d in DATASETS}
    return canon.get(text.lower(), text)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a run's OUTPUT_DIR/checkpoints/best.pt (or the run's OUTPUT_DIR)")
    parser.add_argument("--batch-size", "--b", dest="batch_size", type=_positive_int,
                        default=None,
                        help="images per batch (default: the run's evaluation batch size)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when present, else CPU (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="autocast dtype (default: fp32 on the CPU, the run's on CUDA)")


def evaluate_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="pu-mlc evaluate", allow_abbrev=False,
        description="Score a finished run's best.pt on a dataset split exactly as the run's own "
                    "evaluation did (same split, test transform and metrics): prints mAP, "
                    "OF1/CF1 and the per-class AP; --json writes them.")
    _add_common(parser)
    parser.add_argument("data", metavar="DATA_ROOT", nargs="?", default=None,
                        help="dataset root (default: the one the run was trained on)")
    parser.add_argument("--dataset", type=_dataset, choices=DATASETS, default=None,
                        help="dataset layout (default: the run's)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="test: full labels (default); val: the honest protocol's "
                             "validation split with its partial labels")
    parser.add_argument("--workers", "-j", type=_non_negative_int, default=None,
                        help="data loader processes (default: the run's)")
    parser.add_argument("--json", dest="json_out", metavar="OUT", default=None,
                        help="write mAP, OF1/CF1, per-class AP and the checkpoint's details "
                             "to this JSON file")
    return parser


def predict_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="pu-mlc predict", allow_abbrev=False,
        description="Score image files with a finished run's best.pt (the run's test "
                    "transform): a CSV with one row per image and one sigmoid score per class.")
    _add_common(parser)
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    parser.add_argument("--out", "-o", default=None,
                        help="CSV file to write (default: standard output)")
    return parser


def _load(ns: argparse.Namespace):
    from .inference import load_run

    return load_run(ns.checkpoint, device=ns.device)


def _write_text(path: str, text: str, what: str) -> None:
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as err:
        raise ConfigError(f"{what} {out} cannot be written ({err.strerror or err})") from None


def run_evaluate(argv: Sequence[str]) -> int:
    from .inference import evaluate_split

    ns = evaluate_parser().parse_args(list(argv))
    run = _load(ns)
    result = evaluate_split(run, data=ns.data, dataset=ns.dataset, split=ns.split,
                            batch_size=ns.batch_size, workers=ns.workers,
                            precision=ns.precision)
    s = result.summary
    cfg = run.config
    epoch = f"epoch {run.epoch}" if run.epoch is not None else "epoch ?"
    f1, f1_how = _f1_at_run_thresholds(run, result, ns.split)
    print(f"{ns.split} mAP {s['mAP']:.4f}  OF1 {f1['OF1']:.2f}  CF1 {f1['CF1']:.2f} ({f1_how})"
          f"  [{s['num_images']} images; {run.which or 'selected'} model of {epoch}; "
          f"{run.checkpoint}]")
    width = max(len(n) for n in run.class_names)
    for name, ap in s["per_class_ap"].items():
        print(f"  {name:<{width}}  AP {ap:7.3f}")
    if result.dropped_images:
        print(f"  skipped {len(result.dropped_images)} unreadable image(s)", file=sys.stderr)
    if ns.json_out:
        payload = {
            "checkpoint": str(run.checkpoint), "data": str(Path(ns.data or cfg.data)),
            "dataset": ns.dataset or cfg.dataset, "split": ns.split,
            "epoch": run.epoch, "model": run.which, "selection_score": run.selection_score,
            "device": str(run.device), "dropped_images": result.dropped_images,
            "thresholds": run.thresholds, "f1_at_thresholds": {**f1, "how": f1_how}, **s}
        _write_text(ns.json_out, json.dumps(payload, indent=2) + "\n", "JSON output (--json)")
    return 0


def _f1_at_run_thresholds(run, result, split: str) -> tuple[dict, str]:
    """OF1/CF1 of the scored split at the run's own thresholds (or at 0.5, said so, when the
    run recorded none), and how they were decided, in words."""
    from .metrics.decisions import f1_at

    thresholds = run.thresholds
    if thresholds is None:
        return result.summary, "at 0.5: the checkpoint records no threshold"
    f1 = f1_at(result.scores, result.positives, thresholds["values"], valid=result.valid)
    if thresholds["kind"] == "global":
        return f1, (f"at the global threshold {thresholds['values'][0]:.2f} chosen on "
                    f"{thresholds['chosen_on']}")
    return f1, f"at per-class thresholds chosen on {thresholds['chosen_on']}"


def decision_header(name: str, threshold: float, thresholds: dict) -> str:
    """The CSV header of a decision column: the class, the threshold, global or per class,
    and the split it was chosen on (``positive[cat] (score >= 0.27; global threshold chosen on
    val)``)."""
    kind = "global threshold" if thresholds["kind"] == "global" else "per-class threshold"
    return f"positive[{name}] (score >= {threshold:.4g}; {kind} chosen on " \
           f"{thresholds['chosen_on']})"


def scores_csv(images: Sequence[str], class_names: Sequence[str], scores,
               thresholds: Optional[dict] = None) -> str:
    """CSV text: header ``image,<class names...>``, one row of scores per image; with the run's
    ``thresholds``, one decision column (1/0) per class after the scores, its header naming the
    threshold (:func:`decision_header`)."""
    from .metrics import decide

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["image", *class_names]
    if thresholds is not None:
        values = thresholds["values"]
        header += [decision_header(n, t, thresholds) for n, t in zip(class_names, values)]
        decided = decide(scores, values)
    writer.writerow(header)
    for i, (image, row) in enumerate(zip(images, scores)):
        cells = [image, *(format(float(v), ".9g") for v in row)]
        if thresholds is not None:
            cells += [str(int(d)) for d in decided[i]]
        writer.writerow(cells)
    return buf.getvalue()


def run_predict(argv: Sequence[str]) -> int:
    from .inference import check_image_files, predict_images

    ns = predict_parser().parse_args(list(argv))
    check_image_files(ns.images)           # before the (slower) model build
    run = _load(ns)
    scores = predict_images(run, ns.images, batch_size=ns.batch_size, workers=0,
                            precision=ns.precision)
    text = scores_csv(ns.images, run.class_names, scores, run.thresholds)
    if run.thresholds is None:
        print(f"note: {run.checkpoint} records no decision threshold (written before "
              f"thresholds were kept): the CSV holds scores only", file=sys.stderr)
    if ns.out:
        _write_text(ns.out, text, "CSV output (--out)")
    else:
        sys.stdout.write(text)
    return 0

