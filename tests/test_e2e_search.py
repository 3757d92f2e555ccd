"""The demo search, end to end, through a real local Ray cluster (Ray Tune + Optuna + Ray Train).

One search (2 tasks x 2 trials, 2 gloo DDP workers per trial, ASHA, one study after another:
``budget.concurrent_studies: 1``) is run once for the module through the real command line, with
``storage_path`` given as a ``file://`` URI; the tests read
back what it left: trial statuses (Tune's and each trial's own ``metrics.json``), TensorBoard
event files (with tensorboard's own reader), the Optuna study in SQLite, the exports, and that
what stays on disk once trials end.
"""

from __future__ import annotations

import json
import shlex
import subprocess

import optuna
import pytest

from pu_mlc.config import TrainConfig
from ray_helpers import (PYTHON, REPO, free_port, read_scalars, run_entry, search_env, session_hparams,
                         tiny_overrides)
from tune.export import collect_trials
from store_checks import check_readers_agree
from limits import HANG_GUARD_S

pytestmark = pytest.mark.e2e
TASKS = ("mlc_full", "mlc_pl10")
TRIALS = 2


@pytest.fixture(scope="module")
def demo_search(coco_format_root, module_tmp):
    storage = module_tmp / "experiments"
    storage.mkdir()
    proc = run_entry(["search", "--space", "tests/spaces/pu_only.yaml",
                      *tiny_overrides(coco_format_root, storage, "e2e",
                                      storage_path=f"file://{storage}",
                                      **{"budget.trials_per_task": TRIALS,
                                         "budget.concurrent_studies": 1})],
                     timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return storage / "e2e", proc


def test_every_trial_finished_or_was_stopped_by_the_scheduler(demo_search):
    exp, _ = demo_search
    trials = collect_trials(exp)
    assert sorted({t.study for t in trials}) == sorted(TASKS)
    for task in TASKS:
        mine = [t for t in trials if t.study == task]
        assert len(mine) == TRIALS
        assert {t.status for t in mine} <= {"finished", "stopped_by_scheduler"}, mine
        assert any(t.status == "finished" for t in mine)
        for t in mine:
            assert 1 <= t.epochs <= t.config["train_epochs"]
            assert t.selection_score is not None and 0.0 <= t.selection_score <= 100.0


def test_the_first_trial_of_each_task_runs_the_published_setting(demo_search):
    exp, _ = demo_search
    for task in TASKS:
        first = min((t for t in collect_trials(exp) if t.study == task), key=lambda t: t.started)
        assert (first.config["alpha"], first.config["gamma"], first.config["ema"]) == \
            (1.0, 0.55, 0.9997)
        assert first.params == {"alpha": 1.0, "gamma": 0.55, "ema": 0.9997}


def test_tensorboard_holds_one_run_per_trial_with_epoch_scalars_and_hparams(demo_search):
    exp, _ = demo_search
    for trial in collect_trials(exp):
        run_dir = exp / "tensorboard" / trial.study / trial.trial_id
        scalars, hparams = read_scalars(run_dir)
        for tag in ("train/loss", "train/lr", "val/mAP", "val/mAP_ema"):
            steps = [s for s, _ in scalars[tag]]
            assert steps == list(range(1, trial.epochs + 1)), (tag, steps)
        # the run carries its values; the experiment-wide definition is the search's (root)
        assert "_hparams_/session_start_info" in hparams
        assert "_hparams_/experiment" not in hparams
        recorded = session_hparams(hparams)
        assert recorded["task"] == trial.task and recorded["study"] == trial.study
        for key in ("alpha", "gamma", "ema"):
            assert recorded[key] == pytest.approx(trial.config[key])
    runs = [p for p in (exp / "tensorboard").glob("*/*") if p.is_dir()]
    assert len(runs) == TRIALS * len(TASKS)
    _, root = read_scalars(exp / "tensorboard")
    assert set(root) == {"_hparams_/experiment"}


def test_the_optuna_study_in_sqlite_has_every_trial_with_its_honest_state(demo_search):
    """Trials the scheduler stopped are PRUNED (not COMPLETE); every trial carries its Ray
    trial id, the epochs it ran and its selected test mAP."""
    exp, _ = demo_search
    records = {t.trial_id: t for t in collect_trials(exp)}
    for task in TASKS:
        study = optuna.load_study(study_name=f"e2e.{task}",
                                  storage=f"sqlite:///{exp / 'optuna.sqlite3'}")
        assert len(study.trials) == TRIALS
        assert study.trials[0].params == {"alpha": 1.0, "gamma": 0.55, "ema": 0.9997}
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == TRIALS
        for trial in study.trials:
            record = records[trial.user_attrs["ray_trial_id"]]
            expected = {"finished": optuna.trial.TrialState.COMPLETE,
                        "stopped_by_scheduler": optuna.trial.TrialState.PRUNED}[record.status]
            assert trial.state == expected, (trial.number, trial.state, record.status)
            assert record.study == task
            seen = trial.user_attrs["epochs"]
            if seen == record.epochs:
                assert trial.user_attrs["selected_test_mAP"] == pytest.approx(record.test_map)
            else:
                # stopped on epoch N's result, the trial had validated more epochs before the
                # stop reached its workers: Optuna froze what the scheduler saw, the trial's
                # own record (all_trials.csv, the summary, the report) has the extra epochs
                assert seen < record.epochs and record.status == "stopped_by_scheduler", \
                    (trial, record)
                assert trial.user_attrs["stopped_by_scheduler"] is True
    summary = json.loads((exp / "summary.json").read_text())
    for study in summary["studies"].values():
        for entry in study["trials"]:
            record = records[entry["trial_id"]]
            assert (entry["epochs"], entry["selection_score"], entry["test_mAP"]) == \
                (record.epochs, record.selection_score, record.test_map), (entry, record)


def test_every_reader_of_the_finished_search_tells_the_same_story(demo_search, tmp_path):
    """The store's records, summary.json, all_trials.csv, best.json, the report's results and
    the Optuna study agree on every trial's status and epochs and on each selected trial."""
    exp, _ = demo_search
    selected = check_readers_agree(exp, tmp_path / "exports")
    assert set(selected) == set(TASKS) and all(selected.values())


def test_one_study_after_another_when_concurrent_studies_is_one(demo_search):
    """With ``budget.concurrent_studies: 1`` the second task's study starts its first trial
    only after the first task's last trial ended (Optuna's timestamps), in the space's order.
    With the default (all studies at once) their trials interleave in the one slot."""
    exp, _ = demo_search
    storage = f"sqlite:///{exp / 'optuna.sqlite3'}"
    spans = []
    for task in TASKS:
        trials = optuna.load_study(study_name=f"e2e.{task}", storage=storage).trials
        assert len(trials) == TRIALS and all(t.datetime_complete for t in trials)
        spans.append((min(t.datetime_start for t in trials),
                      max(t.datetime_complete for t in trials)))
    (first_start, first_end), (second_start, _) = spans
    assert first_start < first_end <= second_start, spans


def test_the_search_prints_where_results_are_and_the_test_map_per_task(demo_search):
    exp, proc = demo_search
    out = proc.stdout
    assert f"tensorboard --logdir {exp / 'tensorboard'}" in out
    assert "optuna-dashboard sqlite:///" in out and str(exp / "exports") in out
    summary = json.loads((exp / "summary.json").read_text())
    lines = out.splitlines()
    for task in TASKS:
        result = summary["tasks"][task]["methods"]["pu_mlc"]
        header = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{task} ("))
        assert "val mAP on" in lines[header]            # the selection score named for what it is
        assert lines[header + 1].split()[:4] == ["pu_mlc", "test", "mAP",
                                                 f"{result['selected_test_mAP']:.2f}"]


def test_the_trial_time_split_adds_up_and_is_printed(demo_search):
    exp, proc = demo_search
    timing = json.loads((exp / "exports" / "timing.json").read_text())
    assert timing["trials"] == TRIALS * len(TASKS)
    assert 0 < timing["train_step_seconds"] < timing["trial_seconds"]
    assert 0 < timing["eval_seconds"] < timing["trial_seconds"]
    outside = timing["fraction_outside_training_steps"]
    assert outside == 1 - timing["train_step_seconds"] / timing["trial_seconds"]
    assert timing["fraction_evaluation"] < outside < 1
    assert f"{100 * (1 - outside):.0f}% in training steps" in proc.stdout


def test_export_writes_configs_commands_and_a_csv_of_all_trials(demo_search):
    exp, _ = demo_search
    proc = run_entry(["export", str(exp), "--out", str(exp / "exports2")], timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr
    rows = (exp / "exports2" / "all_trials.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + TRIALS * len(TASKS)
    for task in TASKS:
        assert (exp / "exports2" / task / "best_config.yaml").exists()
        command = (exp / "exports2" / task / "command.sh").read_text()
        assert "torchrun --nproc_per_node=2 -m pu_mlc train" in command
        assert "export OMP_NUM_THREADS=1" in command
        header = (exp / "exports2" / task / "best_config.yaml").read_text().splitlines()[:4]
        assert header[0] == f"# pu-mlc export: the selected trial of study {task}"


def test_rerunning_an_exported_command_reproduces_the_trial_config_field_for_field(
        demo_search, tmp_path):
    exp, _ = demo_search
    best = json.loads((exp / "exports" / "best.json").read_text())["mlc_pl10"]
    trial_cfg = TrainConfig.from_yaml(exp / "trials" / "mlc_pl10" / best["trial_id"] /
                                      "config.yaml")
    exported = TrainConfig.from_yaml(best["config"])
    location = {"output_dir", "tensorboard_dir"}
    differing = {k for k in trial_cfg.to_dict() if getattr(trial_cfg, k) != getattr(exported, k)}
    assert differing <= location

    argv = shlex.split(best["command"])
    assert argv[:5] == ["torchrun", "--nproc_per_node=2", "-m", "pu_mlc", "train"]
    out_dir = tmp_path / "rerun"
    argv = [a for a in argv[5:] if not a.startswith("--output-dir=")] + [
        f"--output-dir={out_dir}"]
    proc = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master-port={free_port()}", "-m", "pu_mlc", "train", *argv],
                          cwd=tmp_path, env=search_env(), capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun_cfg = TrainConfig.from_yaml(out_dir / "config.yaml")
    differing = {k for k in trial_cfg.to_dict() if getattr(trial_cfg, k) != getattr(rerun_cfg, k)}
    assert differing <= location, {k: (getattr(trial_cfg, k), getattr(rerun_cfg, k))
                                   for k in differing}


def test_every_trial_says_how_it_ended_in_its_metrics_json_and_the_summary_counts_them(
        demo_search):
    exp, proc = demo_search
    trials = collect_trials(exp)
    for t in trials:
        metrics = json.loads((t.path / "metrics.json").read_text())
        assert metrics["status"] == t.status, (t.trial_id, metrics["status"], t.status)
        if t.status == "stopped_by_scheduler":
            assert "scheduler" in metrics["failure"]["reason"]
    summary = json.loads((exp / "summary.json").read_text())
    counts = summary["trials"]
    assert counts["trials"] == TRIALS * len(TASKS)
    assert counts["finished"] == sum(t.status == "finished" for t in trials)
    assert counts["stopped_by_scheduler"] == sum(t.status == "stopped_by_scheduler"
                                                 for t in trials)
    assert counts["failed"] == counts["diverged"] == counts["unfinished"] == 0
    assert counts["finished"] + counts["stopped_by_scheduler"] == counts["trials"]
    assert f"trials:       {counts['trials']} run: {counts['finished']} finished" in proc.stdout
    assert len(summary["legs"]) == 1 and summary["wall_seconds"] == summary["legs"][0]["seconds"]


def test_an_ended_trial_keeps_no_resume_state_and_the_top_trials_keep_their_weights(
        demo_search):
    """Once a trial ends, Ray Train's checkpoint of it (``last.pt`` with optimizer state) is
    gone and the trial folder never had one; ``best.pt`` (weights only) stays for the
    ``checkpoints.keep_top`` (2) best trials of each study: here every trial."""
    import torch

    exp, proc = demo_search
    for t in collect_trials(exp):
        assert not list((exp / "ray_train" / f"{t.study}-{t.trial_id}").glob("checkpoint_epoch*"))
        assert not list(t.path.rglob("last.pt"))
        assert t.has_weights, t.trial_id
        saved = torch.load(t.weights_file, map_location="cpu", weights_only=True)
        assert "optimizer" not in saved and "recipe" not in saved and saved["which"] in (
            "regular", "ema")
    summary = json.loads((exp / "summary.json").read_text())
    size = summary["size_on_disk_bytes"]
    assert 0 < size and f"disk:         {size / 2 ** 20:.0f} MiB" in proc.stdout
    print(f"disk use of the experiment: {size / 2 ** 20:.1f} MiB for "
          f"{TRIALS * len(TASKS)} trials")


def test_a_storage_path_of_an_unknown_scheme_is_refused_before_ray_starts(coco_format_root,
                                                                           tmp_path):
    proc = run_entry(["search", "--space", "tests/spaces/pu_only.yaml",
                      *tiny_overrides(coco_format_root, tmp_path, "ftp",
                                      storage_path="ftp://host/experiments")],
                     timeout=HANG_GUARD_S)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "storage_path = 'ftp://host/experiments'" in errors[0]
    assert "file://" in errors[0] and "s3://" in errors[0]
    assert not (REPO / "ftp:").exists() and not (tmp_path / "ftp:").exists()
