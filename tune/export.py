"""Export an experiment: per study (task x method), the selected trial's full config and the
command that reproduces it, plus one CSV of every trial (search and repeat trials, with their
method, known-label proportion, training seed and label-mask seed, status, selection).

Everything is read through the experiment store (:mod:`tune.store`): the same trial records and
the same selection rule as the search's summary and the report. Ray need not be running.

``best_config.yaml`` is the trial's own ``config.yaml`` (every field, not only the searched ones)
with only the run location removed (a re-run gets its own dated folder), headed by comments that
say what it is: study, method, task, prob, trial id, selection score, selected weights and epoch,
test mAP. ``command.sh`` runs from any directory: the installed ``pu-mlc`` command (``torchrun
-m pu_mlc`` with as many processes as the trial had DDP workers, because the PU statistics are
per-process batch statistics: the same ``--b`` on a different number of processes is a different
method), absolute data paths, and the thread count the trial ran with (``OMP_NUM_THREADS``; a
different count changes the order of floating-point sums, and so the last digits of the mAP).
"""

from __future__ import annotations

import csv
import logging
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from pu_mlc.files import check_writable_dir

from .store import ExperimentStore, StudyRecords, TrialRecord, open_experiment, read_experiment

log = logging.getLogger(__name__)


def collect_trials(experiment_dir: str | Path) -> list[TrialRecord]:
    """Every trial of every study (search, then repeats), from the experiment store."""
    store, spec = open_experiment(experiment_dir)
    studies = read_experiment(store, spec)
    order = {"search": 0, "repeats": 1}
    return [t for records in studies.values()
            for t in sorted(records.trials, key=lambda t: (order.get(t.stage, 2),
                                                           t.started or 0, t.trial_id))]


def export_experiment(experiment_dir: str | Path, out_dir: Optional[str | Path] = None) -> dict:
    """Write ``exports/<study>/best_config.yaml``, ``command.sh`` (the selected trial of each
    study), ``all_trials.csv``, ``best.json`` and ``timing.json``: into ``out_dir``, or into the
    experiment's ``exports/`` (in its bucket, for an experiment in an object store). An
    experiment in an object store exported to a local ``out_dir`` (a laptop) also gets each
    selected trial's weights there (``<study>/best.pt``), for ``pu-mlc evaluate``/``predict``."""
    store, spec = open_experiment(experiment_dir)
    if out_dir:
        out = Path(out_dir).resolve()
        check_writable_dir(out, "export folder (--out)")
    elif not store.remote:
        out = Path(store.exports_dir)
        check_writable_dir(out, "export folder (--out)")
    else:
        out = Path(tempfile.mkdtemp(prefix="pumlc-export-"))      # uploaded, then removed
    uploaded = store.remote and not out_dir
    shown = ((lambda p: store.uri(store.exports_dir / p.relative_to(out).as_posix()))
             if uploaded else str)
    try:
        result = _export(store, spec, out, shown,
                         fetch_weights=store.remote and bool(out_dir))
        if uploaded:
            store.upload(out, store.exports_dir)
        return result
    finally:
        if store.remote and not out_dir:
            shutil.rmtree(out, ignore_errors=True)


def _export(store: ExperimentStore, spec, out: Path, shown, fetch_weights: bool) -> dict:
    """Write the export into the local folder ``out``; ``shown(path)`` names a written file
    where the user will find it (the bucket, for an export uploaded there)."""
    out.mkdir(parents=True, exist_ok=True)
    studies = read_experiment(store, spec)
    records = [t for s in studies.values() for t in s.trials]
    write_trials_csv(out / "all_trials.csv", records)
    workers = spec.resources.num_workers
    best_per_study: dict[str, dict] = {}
    for name, study in studies.items():
        best = study.selected
        cfg = best.train_config() if best is not None else None
        if cfg is None:
            log.warning("study %s: no trial reported a score; nothing to export", name)
            continue
        study_out = out / name
        study_out.mkdir(exist_ok=True)
        cfg = exported_config(cfg)
        defined = spec.study(name)
        store.write_text(study_out / "best_config.yaml",
                         config_header(best, defined.methods, defined.equivalence)
                         + cfg.to_yaml())
        threads = trial_threads(store, best)
        command = reproduce_command(cfg, workers)
        store.write_text(study_out / "command.sh", command_script(best, command, threads))
        (study_out / "command.sh").chmod(0o755)
        weights = store.uri(best.weights_file) if best.has_weights else None
        if fetch_weights and best.has_weights:
            data = store.storage.read_bytes(best.weights_file)
            if data is not None:
                (study_out / "best.pt").write_bytes(data)
                weights = str(study_out / "best.pt")
        best_per_study[name] = {
            "study": name, "task": best.task, "method": best.method, "prob": best.prob,
            "seed": best.seed, "mask_seed": best.mask_seed, "trial_id": best.trial_id,
            "status": best.status, "epochs": best.epochs,
            "selection_score": best.selection_score,
            "selected_weights": best.selected_weights, "selected_epoch": best.selected_epoch,
            "test_mAP": best.test_map, "params": best.params, "weights": weights,
            "config": shown(study_out / "best_config.yaml"), "command": command,
            "omp_num_threads": threads}
    store.write_json(out / "best.json", best_per_study)
    timing = timing_summary(records)
    store.write_json(out / "timing.json", timing)
    unfinished = unfinished_studies(studies)
    if unfinished:
        log.warning("partial experiment: %d of %d studies have not finished their search (%s); "
                    "their best so far is exported", len(unfinished), len(studies),
                    ", ".join(unfinished))
    return {"exports": shown(out), "tasks": best_per_study, "trials": len(records),
            "timing": timing, "unfinished": unfinished}


def unfinished_studies(studies: dict[str, StudyRecords]) -> list[str]:
    """Studies whose search has not finished."""
    return [name for name, s in studies.items() if not s.search_done]


def timing_summary(records: list[TrialRecord]) -> dict:
    """Where trial time went: training steps vs everything else (Ray start-up, worker groups,
    data and model setup, evaluation, checkpoints). Trial time is Tune's ``time_total_s``."""
    wall = sum(r.wall_seconds or 0.0 for r in records)
    train = sum(r.train_seconds for r in records)
    evaluation = sum(r.eval_seconds for r in records)
    return {"trials": len(records), "trial_seconds": wall, "train_step_seconds": train,
            "eval_seconds": evaluation,
            "fraction_outside_training_steps": (1.0 - train / wall) if wall else None,
            "fraction_evaluation": (evaluation / wall) if wall else None}


def exported_config(cfg):
    """The trial's config as a stand-alone run: no output folder of the search (a re-run gets
    its own dated folder), the precision and data pipeline the trial really used."""
    return cfg.replace(output_dir=None, tensorboard_dir=None, overwrite=False, resume=False)


def reproduce_command(cfg, num_workers: int) -> str:
    """The installed command that trains ``cfg`` again, from any directory."""
    if num_workers > 1:
        program = f"torchrun --nproc_per_node={num_workers} -m pu_mlc train"
    else:
        program = "pu-mlc train"
    return cfg.to_cli(program=program)


def trial_threads(store: ExperimentStore, trial: TrialRecord) -> Optional[int]:
    """The intra-op thread count the trial's processes ran with (recorded by the engine)."""
    metrics = store.read_json(trial.path / "metrics.json") or {}
    threads = (metrics.get("environment") or {}).get("torch_threads")
    return int(threads) if isinstance(threads, int) and threads > 0 else None


def config_header(trial: TrialRecord, methods: tuple[str, ...] = (),
                  equivalence: str = "") -> str:
    """Comment lines that say which trial a ``best_config.yaml`` is (the YAML stays a plain
    ``TrainConfig``: ``pu-mlc train --config`` reads it). A study that stands for several
    methods (the same training at full labels) names them all, and why."""
    score = "-" if trial.selection_score is None else f"{trial.selection_score:.4f}"
    test = "-" if trial.test_map is None else f"{trial.test_map:.4f}"
    method = " = ".join(methods) if len(methods) > 1 else trial.method
    why = f"#   one study for {method}: {equivalence}\n" if len(methods) > 1 and equivalence \
        else ""
    return (f"# pu-mlc export: the selected trial of study {trial.study}\n"
            f"#   task {trial.task}, method {method}, prob {trial.prob:g}\n{why}"
            f"#   trial {trial.trial_id} ({trial.status}, {trial.epochs} epoch(s)); selection "
            f"score {score}; selected weights: {trial.selected_weights or '-'} at epoch "
            f"{trial.selected_epoch or '-'}; test mAP {test}\n"
            f"# Re-run: pu-mlc train --config best_config.yaml (or command.sh beside it)\n")


def command_script(trial: TrialRecord, command: str, threads: Optional[int]) -> str:
    lines = ["#!/usr/bin/env bash",
             f"# Reproduces trial {trial.trial_id} of study {trial.study} (task {trial.task}, "
             f"method {trial.method}, prob {trial.prob:g}); recorded test mAP "
             + ("-" if trial.test_map is None else f"{trial.test_map:.6f}") + ".",
             "# Runs from any directory with the installed pu-mlc; the run gets its own folder "
             "under ./runs/train/.",
             "set -euo pipefail"]
    if threads is not None:
        lines += ["# the trial's thread count: another one changes the order of "
                  "floating-point sums (the mAP's last digits)",
                  f"export OMP_NUM_THREADS={shlex.quote(str(threads))}"]
    return "\n".join(lines + [command]) + "\n"


CSV_COLUMNS = ("study", "task", "method", "prob", "stage", "repeat", "seed", "mask_seed",
               "trial_id", "status", "epochs", "selection_score", "selected_weights",
               "selected_epoch", "selected_test_mAP", "wall_seconds", "train_seconds",
               "eval_seconds")


def write_trials_csv(path: Path, records: list[TrialRecord]) -> None:
    params = sorted({k for r in records for k in r.params})
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*CSV_COLUMNS, *params, "weights_kept", "output_dir"])
        for r in records:
            w.writerow([r.study, r.task, r.method, r.prob, r.stage, r.repeat, r.seed,
                         r.mask_seed, r.trial_id, r.status, r.epochs, r.selection_score,
                         r.selected_weights, r.selected_epoch, r.test_map, r.wall_seconds,
                         r.train_seconds, r.eval_seconds, *[r.params.get(k) for k in params],
                         r.has_weights, r.path])
