"""Export an experiment: per study (task x method), the best trial's full config and the command
that reproduces it, plus one CSV of every trial (search and repeat trials, with their method,
known-label proportion, training seed and label-mask seed).

The exported YAML is the trial's own ``config.yaml`` (every field, not only the searched ones),
with only the run location changed (``output_dir``, ``tensorboard_dir``) so re-running it does not
write into the search's files. The command uses the published flags, and ``torchrun`` with as
many processes as the trial had DDP workers, because the PU statistics are per-process batch
statistics: the same ``--b`` on a different number of processes is a different method.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from pu_mlc.config import TrainConfig
from pu_mlc.files import check_writable_dir
from pu_mlc.errors import ConfigError

from .trial import epochs_run

log = logging.getLogger(__name__)


@dataclass
class TrialRecord:
    task: str                    # the study: the task's name, or "<task>.<method>"
    trial_id: str
    status: str                  # finished | stopped_by_scheduler | errored | diverged | incomplete
    epochs: int
    best_score: Optional[float]
    selected_test_map: Optional[float]
    params: dict[str, Any]
    config: Optional[TrainConfig]
    wall_seconds: Optional[float]
    output_dir: Path
    train_seconds: float = 0.0           # inside training steps (all epochs)
    eval_seconds: float = 0.0            # scoring val/test (all epochs)
    stage: str = "search"                # search | repeats
    repeat: Optional[int] = None

    @property
    def study(self) -> str:
        return self.task

    @property
    def task_name(self) -> str:
        return self.task.partition(".")[0]

    @property
    def method(self) -> str:
        _, dot, method = self.task.partition(".")
        if dot:
            return method
        loss = self.config.loss if self.config is not None else "pu"
        return "pu_mlc" if loss == "pu" else loss

    @property
    def prob(self) -> Optional[float]:
        return self.config.prob if self.config is not None else None

    @property
    def seed(self) -> Optional[int]:
        return self.config.seed if self.config is not None else None

    @property
    def mask_seed(self) -> Optional[int]:
        return getattr(self.config, "mask_seed", None) if self.config is not None else None


def collect_trials(experiment_dir: Path) -> list[TrialRecord]:
    """Every trial of every study (search, then repeats), from Tune's experiment state and the
    trials' own files."""
    records = []
    for stage, root in (("search", experiment_dir / "tune"),
                        ("repeats", experiment_dir / "tune_repeats")):
        if root.is_dir():
            records += _collect_stage(experiment_dir, root, stage)
    return records


def _collect_stage(experiment_dir: Path, tune_root: Path, stage: str) -> list[TrialRecord]:
    from ray.tune import ExperimentAnalysis

    # The trials' metrics come from their own metrics.json; Tune's per-trial result files are
    # not written (its loggers are off), which ExperimentAnalysis reports as a warning per trial.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    records = []
    for task_dir in sorted(p for p in tune_root.iterdir() if p.is_dir()):
        task = task_dir.name
        try:
            analysis = ExperimentAnalysis(str(task_dir))
        except Exception as err:  # no state yet (a study that never started)
            log.warning("study %s: no Tune state readable in %s (%s)", task, task_dir, err)
            continue
        for trial in analysis.trials:
            out = experiment_dir / "trials" / task / trial.trial_id
            metrics = _read_json(out / "metrics.json") or {}
            cfg = TrainConfig.from_yaml(out / "config.yaml") if (out / "config.yaml").exists() \
                else None
            history = metrics.get("history", [])
            epochs = epochs_run(metrics)
            max_epochs = cfg.train_epochs if cfg else None
            recorded = metrics.get("status")
            if recorded == "diverged":
                status = "diverged"
            elif trial.status == "ERROR" or recorded == "failed":
                status = "errored"
            elif trial.status == "TERMINATED":
                status = ("finished" if metrics.get("status") == "finished" or
                          (max_epochs is not None and epochs >= max_epochs)
                          else "stopped_by_scheduler")
            else:
                status = "incomplete"
            result = metrics.get("result", {})
            records.append(TrialRecord(
                task=task, trial_id=trial.trial_id, status=status, epochs=epochs,
                best_score=result.get("selection_score"),
                selected_test_map=result.get("test_mAP"),
                params={k: v for k, v in trial.config.items() if k != "repeat"},
                config=cfg, wall_seconds=(trial.last_result or {}).get("time_total_s"),
                output_dir=out, train_seconds=sum(h.get("train_seconds", 0.0) for h in history),
                eval_seconds=sum(h.get("eval_seconds", 0.0) for h in history),
                stage=stage, repeat=trial.config.get("repeat")))
    return records


def export_experiment(experiment_dir: str | Path, out_dir: Optional[str | Path] = None) -> dict:
    """Write ``exports/<study>/best_config.yaml``, ``command.sh`` (the search's selected trial
    per study), ``all_trials.csv`` and ``best.json``."""
    experiment_dir = Path(experiment_dir).resolve()
    if not (experiment_dir / "search_space.yaml").exists():
        raise ConfigError(f"{experiment_dir} is not a pu-mlc experiment (no search_space.yaml); "
                          f"pass the directory printed by 'train_entry.py search'")
    saved = experiment_dir / "search_space.yaml"
    try:
        spec = yaml.safe_load(saved.read_text())
        workers = int(spec["resources"]["num_workers"])
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError, ValueError) as err:
        raise ConfigError(f"{saved} is damaged ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]}); it is written by "
                          f"'pu-mlc search': restore it or export another experiment") from None
    out = Path(out_dir).resolve() if out_dir else experiment_dir / "exports"
    check_writable_dir(out, "export folder (--out)")
    out.mkdir(parents=True, exist_ok=True)
    records = collect_trials(experiment_dir)
    _write_csv(out / "all_trials.csv", records)
    best_per_task: dict[str, dict] = {}
    for task in sorted({r.task for r in records}):
        candidates = [r for r in records if r.task == task and r.best_score is not None
                      and r.config is not None and r.status != "diverged"
                      and r.stage == "search"]
        if not candidates:
            log.warning("task %s: no trial reported a score; nothing to export", task)
            continue
        best = max(candidates, key=lambda r: r.best_score)
        cfg = exported_config(best.config, experiment_dir, task)
        task_out = out / task
        task_out.mkdir(exist_ok=True)
        cfg.to_yaml(task_out / "best_config.yaml")
        command = reproduce_command(cfg, workers)
        (task_out / "command.sh").write_text("#!/usr/bin/env bash\n# Reproduces trial "
                                             f"{best.trial_id} of study {task}.\n{command}\n")
        best_per_task[task] = {
            "task": best.task_name, "method": best.method, "prob": best.prob,
            "mask_seed": best.mask_seed, "seed": best.seed,
            "trial_id": best.trial_id, "status": best.status, "epochs": best.epochs,
            "selection_score": best.best_score, "test_mAP": best.selected_test_map,
            "params": best.params, "config": str(task_out / "best_config.yaml"),
            "command": command}
    (out / "best.json").write_text(json.dumps(best_per_task, indent=2))
    timing = timing_summary(records)
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    unfinished = unfinished_studies(experiment_dir, spec)
    if unfinished:
        log.warning("partial experiment: %d of %d studies have not finished their search (%s); "
                    "their best so far is exported", len(unfinished),
                    len(study_names(spec)), ", ".join(unfinished))
    return {"exports": str(out), "tasks": best_per_task, "trials": len(records),
            "timing": timing, "unfinished": unfinished}


def study_names(raw_space: dict) -> list[str]:
    """The studies a saved ``search_space.yaml`` defines: ``<task>`` without methods, else
    ``<task>.<method>`` for every pair (the order of :func:`tune.space.parse_search_spec`)."""
    tasks = [t["name"] for t in raw_space.get("tasks") or [] if isinstance(t, dict)]
    methods = [m["name"] for m in raw_space.get("methods") or [] if isinstance(m, dict)]
    return [f"{t}.{m}" for t in tasks for m in methods] if methods else tasks


def unfinished_studies(experiment_dir: Path, raw_space: dict) -> list[str]:
    """Studies whose search has not finished (no done marker in ``tune/<study>/``)."""
    return [name for name in study_names(raw_space)
            if not (experiment_dir / "tune" / name / ".pu_mlc_done").exists()]


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


def exported_config(cfg: TrainConfig, experiment_dir: Path, task: str) -> TrainConfig:
    """The trial's config as a stand-alone run: no output folder of the search (a re-run gets
    its own dated folder), the precision and data pipeline the trial really used."""
    return cfg.replace(output_dir=None, tensorboard_dir=None, overwrite=False, resume=False)


def reproduce_command(cfg: TrainConfig, num_workers: int) -> str:
    if num_workers > 1:
        program = f"torchrun --nproc_per_node={num_workers} train_entry.py"
    else:
        program = "python train_entry.py"
    return cfg.to_cli(program=program)


def _write_csv(path: Path, records: list[TrialRecord]) -> None:
    params = sorted({k for r in records for k in r.params})
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["study", "task", "method", "prob", "stage", "repeat", "seed", "mask_seed",
                    "trial_id", "status", "epochs", "selection_score", "selected_test_mAP",
                    "wall_seconds", "train_seconds", "eval_seconds", *params, "output_dir"])
        for r in records:
            w.writerow([r.study, r.task_name, r.method, r.prob, r.stage, r.repeat, r.seed,
                        r.mask_seed, r.trial_id, r.status, r.epochs, r.best_score,
                        r.selected_test_map, r.wall_seconds, r.train_seconds, r.eval_seconds,
                        *[r.params.get(k) for k in params], r.output_dir])


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
