"""How busy the trial slots are: all studies at once vs one study after another.

Runs the same search twice on a real local Ray (2 trial slots; two studies whose trials have
uneven lengths, 1 epoch vs 3 epochs, 3 trials each, no early stopping), once with every study
searched at once (``budget.concurrent_studies: null``, the default) and once with one study
after another (``budget.concurrent_studies: 1``, the schedule before the multi-study search), and
prints each schedule's slot utilisation:

    sum of trial wall time / (slots x search wall time)

It measures, it asserts no speed (a busy machine decides), but it refuses figures that do not add
up: every trial must finish, ``summary.json``'s totals must equal its trial list, and in the
one-after-another run no trial of the second study may start before the first study's last trial
ended. Needs the ``search`` extra (ray, optuna) and pycocotools; ~5 minutes on 2 CPU cores.

    .venv/bin/python bench/search_concurrency.py [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "tests" / "spaces" / "pu_only.yaml"      # one method, the demo's model and recipe
SLOTS = 2
TRIALS_PER_STUDY = 3
TASKS = ("[{name: short, prob: 0.1, fixed: {train_epochs: 1, epochs: 1}}, "
         "{name: long, prob: 0.5, fixed: {train_epochs: 3, epochs: 3}}]")
SCHEDULES = {"concurrent": "null", "sequential": 1}     # budget.concurrent_studies


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               RAY_DISABLE_USAGE_STATS="1", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)          # the search starts its own private local cluster
    env.setdefault("RAY_AUTH_MODE", "disabled")
    return env


def _run(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "train_entry.py"), *args], cwd=REPO,
                          env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: `train_entry.py {' '.join(args[:2])}` exited {proc.returncode}:\n"
                 f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def build_data(root: Path) -> Path:
    """The test suite's tiny dataset: real Fashion-MNIST photos, 24 train / 8 val / 12 test."""
    data = root / "data"
    _run(["make-demo-data", str(data), "--n-train", "24", "--n-val", "8", "--n-test", "12",
          "--canvas-size", "112"])
    return data


def run_schedule(data: Path, storage: Path, name: str, concurrent_studies) -> dict:
    values = {"fixed.data": data, "storage_path": storage, "name": name,
              "fixed.scale_size": 40, "fixed.crop_size": 32, "fixed.batch_size": 4,
              "fixed.eval_batch_size": 16, "tasks": TASKS,
              "budget.trials_per_task": TRIALS_PER_STUDY,
              "budget.max_concurrent_trials": SLOTS,
              "budget.concurrent_studies": concurrent_studies,
              "resources.num_workers": 1, "scheduler.type": "none"}
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    _run(["search", "--space", str(SPACE), "--no-export", *sets])
    summary = json.loads((storage / name / "summary.json").read_text())
    shutil.rmtree(storage / name / "ray_train", ignore_errors=True)     # ~1 GB of checkpoints
    for ckpt in (storage / name / "trials").rglob("*.pt"):
        ckpt.unlink()
    return summary


def check_accounting(summary: dict, sequential: bool) -> list[str]:
    """What must hold for the utilisation figure to mean anything; returns the problems."""
    problems = []
    expected = 2 * TRIALS_PER_STUDY
    counts = summary["trials"]
    if not counts["trials"] == counts["finished"] == expected:
        problems.append(f"expected {expected} finished trials, got {counts}")
    trials = [t for s in summary["studies"].values() for t in s["trials"]]
    seconds = sum(t["wall_seconds"] for t in trials)
    if abs(summary["trial_seconds"] - seconds) > 1e-6 * max(1.0, seconds):
        problems.append(f"trial_seconds {summary['trial_seconds']} != sum of trials {seconds}")
    utilisation = seconds / (summary["slots"] * summary["wall_seconds"])
    if summary["slots"] != SLOTS or abs(summary["slot_utilisation"] - utilisation) > 1e-9:
        problems.append(f"slot_utilisation {summary['slot_utilisation']} != {utilisation}")
    if not 0 < utilisation <= 1:
        problems.append(f"slot utilisation {utilisation} outside (0, 1]")
    if sequential:
        problems += _overlap(summary["experiment"])
    return problems


def _overlap(experiment: str) -> list[str]:
    """In a one-after-another run the second study's trials start after the first's end
    (Optuna's own timestamps)."""
    import optuna

    url = f"sqlite:///{Path(experiment) / 'optuna.sqlite3'}"
    spans = []
    for summary in optuna.get_all_study_summaries(storage=url):
        trials = optuna.load_study(study_name=summary.study_name, storage=url).trials
        spans.append((min(t.datetime_start for t in trials),
                      max(t.datetime_complete for t in trials), summary.study_name))
    spans.sort()
    return [f"study {b[2]} started at {b[0]} before {a[2]} ended at {a[1]}"
            for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--out", type=Path, default=None,
                        help="working folder (default: a new temporary one, removed after)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="pumlc-concurrency-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        data = build_data(root)
        figures, problems = {}, []
        for name, studies_at_once in SCHEDULES.items():
            print(f"running the {name} schedule ...", flush=True)
            summary = run_schedule(data, root / name, name, studies_at_once)
            problems += [f"{name}: {p}" for p in check_accounting(summary, name == "sequential")]
            figures[name] = {key: summary[key] for key in
                             ("slot_utilisation", "trial_seconds", "wall_seconds", "slots")}
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| schedule | slot utilisation | trial time (s) | search wall (s) | slots |\n"
          "|---|---|---|---|---|")
    for name, f in figures.items():
        print(f"| {name} | {100 * f['slot_utilisation']:.1f}% | {f['trial_seconds']:.0f} | "
              f"{f['wall_seconds']:.0f} | {f['slots']} |")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "problems": problems}, indent=2))
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
