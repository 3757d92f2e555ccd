"""``train_entry.py search | export | demo``: the Ray side of the command line."""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from pu_mlc.argparse_tools import ArgumentParser
from pu_mlc.cli import guarded, setup_logging

from .storage import is_remote, join_uri
from .store import dashboard_command

log = logging.getLogger("tune")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_SPACE = REPO_ROOT / "search_spaces" / "demo.yaml"
DEMO_DATA = Path("demo_data")


def search_parser(prog: str = "pu-mlc search") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, allow_abbrev=False, description="Run a Ray Tune + Optuna search over "
                                "Ray Train DDP trials (see search_spaces/README.md).")
    p.add_argument("--space", required=True, help="search space YAML file")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment of this space after an interruption")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the space, e.g. --set budget.trials_per_task=8 "
                        "--set fixed.data=/data/coco --set storage_path=/shared/exp")
    p.add_argument("--no-export", action="store_true",
                   help="skip the export and the report at the end")
    p.add_argument("--verbose", action="store_true")
    return p


def run_search_command(argv: Sequence[str]) -> int:
    ns = search_parser().parse_args(list(argv))
    setup_logging(ns.verbose)
    from .preflight import check_inputs
    from .space_file import load_search_spec, parse_override

    overrides = dict(parse_override(s) for s in ns.set)
    spec = load_search_spec(ns.space, overrides)        # every error before Ray starts
    from .search import check_experiment_dir, resolve_storage

    spec = resolve_storage(spec)                        # a storage URI settled before Ray starts
    check_inputs(spec)
    check_experiment_dir(spec, ns.resume)               # reads only; refuses before Ray starts
    return _search_and_report(spec, ns.resume, export=not ns.no_export)


def _search_and_report(spec, resume: bool, export: bool = True) -> int:
    import time

    from .cluster import init_ray
    from .export import export_experiment
    from .search import resolve_storage, run_search

    spec = resolve_storage(spec)                  # a refused storage URI fails before Ray starts
    t0 = time.time()
    where = init_ray(spec)
    methods = sorted({s.method for s in spec.studies})
    log.info("search %s on %s: %d task(s) x %d method(s) (%s) = %d studies x %d trial(s)%s, "
             "%d DDP worker(s) per trial", spec.name, where, len(spec.tasks), len(methods),
             ", ".join(methods), len(spec.studies), spec.trials_per_task,
             f" + {spec.repeats} repeat(s)" if spec.repeats else "",
             spec.resources.num_workers)
    summary = run_search(spec, resume=resume)
    missing = summary["trials"].get("missing_records", 0)
    if missing:
        # trials ran, but their records are not where this driver reads: no number printed
        print(f"error: {missing} trial(s) of '{spec.name}' ran but left no record under "
              f"storage_path = {spec.storage_path} on this node; their files were written "
              f"where this node cannot see them (storage_path must be one shared storage for "
              f"every node); nothing is reported", file=sys.stderr, flush=True)
        return 1
    exported = export_experiment(spec.experiment_dir) if export else None
    report = None
    if export:
        report = write_report_to(spec.experiment_dir)
    _print_summary(spec, summary, exported, time.time() - t0)
    if report is not None:
        print(f"  report:       {report['report_md']}  (table, published rows, "
              f"{len(report['figures'])} figures, results.json)", flush=True)
    counts = summary["trials"]
    if counts["trials"] and not counts["finished"] + counts["stopped_by_scheduler"]:
        print(f"error: no trial of '{spec.name}' trained to the end of an epoch "
              f"({counts['failed']} failed, {counts['diverged']} diverged); each trial's "
              f"metrics.json under {join_uri(str(spec.experiment_dir), 'trials')} gives its "
              f"reason",
              file=sys.stderr, flush=True)
        return 1
    return 0


def _print_summary(spec, summary: dict, exported, seconds: float) -> None:
    exp = spec.experiment_dir
    legs = summary.get("legs") or []
    took = f"finished in {seconds:.0f} s"
    if len(legs) > 1:
        took += f" ({summary['wall_seconds']:.0f} s over {len(legs)} runs, resumes included)"
    counts = summary.get("trials") or {}
    lines = ["", f"search '{spec.name}' {took}",
             f"  experiment:   {exp}",
             f"  trials:       {counts.get('trials', 0)} run: "
             f"{counts.get('finished', 0)} finished, "
             f"{counts.get('stopped_by_scheduler', 0)} stopped early by the scheduler, "
             f"{counts.get('diverged', 0)} diverged, {counts.get('failed', 0)} failed"
             + (f", {counts['unfinished']} unfinished" if counts.get("unfinished") else ""),
             f"  TensorBoard:  {tensorboard_command(exp)}",
             f"  Optuna study: {dashboard_command(spec.study_storage)}"]
    if exported:
        lines.append(f"  exports:      {exported['exports']}  (best_config.yaml + command.sh "
                     f"per task, all_trials.csv)")
        t = exported["timing"]
        if t["fraction_outside_training_steps"] is not None:
            lines.append(f"  trial time:   {t['trial_seconds']:.0f} s in {t['trials']} trials, "
                         f"{100 * (1 - t['fraction_outside_training_steps']):.0f}% in training "
                         f"steps, {100 * t['fraction_evaluation']:.0f}% evaluating")
    if summary.get("size_on_disk_bytes") is not None:
        lines.append(f"  disk:         {summary['size_on_disk_bytes'] / 2 ** 20:.0f} MiB "
                     f"(resume checkpoints released as trials end; best.pt kept for the top "
                     f"{spec.checkpoints.keep_top} trial(s) of each study)")
    if summary.get("worker_utilisation") is not None:
        held = (f"held by trials {100 * summary['slot_utilisation']:.0f}% of the search's wall "
                f"time, " if summary.get("slot_resource") else "")
        lines.append(f"  trial slots:  {summary['slots']}, {held}trial workers running "
                     f"{100 * summary['worker_utilisation']:.0f}% (computing "
                     f"{100 * summary['busy_utilisation']:.0f}%)")
    lines += results_lines(spec, summary)
    print("\n".join(lines), flush=True)


def selection_label(spec, prob: float) -> str:
    """What the selection score is, in words (it is not the test mAP)."""
    protocols = {s.base.protocol for s in spec.studies}
    if protocols == {"paper"}:
        return "test mAP (paper protocol: epochs selected on the test set)"
    return f"val mAP on {100 * prob:g}%-known labels"


def _pm(mean, sd) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def results_lines(spec, summary: dict) -> list[str]:
    """Per task: the chance mAP of its test split, each method's test mAP of its selected config
    (mean ± sd over the repeats) with OF1/CF1 at the threshold its runs chose, then the paired
    differences against the reference method with their 95% t interval. Methods that were one
    study (they train identically there) share a line, marked with the reason; without repeats
    a last line says the ranking is unsupported, and by how much search noise moved scores."""
    repeats = summary.get("repeats") or 0
    what = (f"test mAP of the selected config, mean ± sd over {repeats} repeat(s) (new seeds "
            f"and label masks)" if repeats else "test mAP of the selected trial")
    lines = [f"  per task: {what}, OF1/CF1 at the threshold chosen on validation; in brackets "
             f"the selection score"]
    noise = []
    for task, entry in summary["tasks"].items():
        chance = entry.get("chance_mAP")
        lines.append(f"    {task} (prob={entry['prob']:g}; selection: "
                     f"{selection_label(spec, entry['prob'])}"
                     + (f"; chance mAP {chance:.2f}" if chance is not None else "") + ")")
        shown = {m: r for m, r in entry["methods"].items() if not r.get("same_study_as")}
        labels = {m: " = ".join(r.get("methods") or [m]) for m, r in shown.items()}
        width = max([22] + [len(v) + 1 for v in labels.values()])
        for method, r in shown.items():
            n = f" (n={r['n']})" if repeats else ""
            score = r.get("selection_score")
            f1 = "".join(f"  {k} {r[k + '_mean']:.2f}" for k in ("OF1", "CF1")
                         if r.get(k + "_mean") is not None)
            lines.append(f"      {labels[method]:<{width}} test mAP "
                         f"{_pm(r['test_mAP_mean'], r['test_mAP_sd'])}{n}{f1}"
                         + (f"  [selection {score:.2f}]" if score is not None else "")
                         + f"  trial {r['selected_trial']}")
            sn = r.get("search_noise") or {}
            if sn.get("selection_range") is not None:
                noise.append(sn["selection_range"])
        for other, d in entry["paired_differences"].items():
            if d.get("same_as"):
                continue
            name = labels.get(other, other)
            ci = d.get("ci")
            interval = (f"; 95% t CI [{ci['low']:.2f}, {ci['high']:.2f}]"
                        + ("" if ci["significant"] else ", not significant") if ci else "")
            lines.append(f"      {d['reference']} - {name:<14} {_pm(d['mean'], d['sd'])}"
                         f" (paired, n={d['n']}{interval})")
        for e in entry.get("equivalences") or []:
            lines.append(f"      note: {e['reason']}")
        if entry.get("unfinished"):
            lines.append(f"      unfinished: {', '.join(entry['unfinished'])}")
    if not repeats:
        lines.append("  no repeats: one run per cell, so this ranking is unsupported"
                     + (f"; the best trials of a study differ by up to {max(noise):.2f} in "
                        f"selection score (search noise)" if noise else "")
                     + " (budget.repeats >= 2 gives a spread and confidence intervals)")
    return lines


def run_export_command(argv: Sequence[str]) -> int:
    p = ArgumentParser(prog="pu-mlc export", allow_abbrev=False,
                                description="Export the best config of every study.")
    p.add_argument("experiment_dir")
    p.add_argument("--out", default=None, help="default: EXPERIMENT_DIR/exports")
    ns = p.parse_args(list(argv))
    setup_logging()
    from .export import export_experiment

    result = export_experiment(ns.experiment_dir, ns.out)
    if result["unfinished"]:
        print(f"partial experiment: {len(result['unfinished'])} stud(y/ies) unfinished "
              f"({', '.join(result['unfinished'])}); their best trial so far is exported")
    print(f"exported {len(result['tasks'])} stud(y/ies) from {result['trials']} trial(s) to "
          f"{result['exports']}")
    for task, best in result["tasks"].items():
        print(f"  {task}: score {best['selection_score']:.2f} -> {best['config']}")
        print(f"    {best['command']}")
    return 0


def run_report_command(argv: Sequence[str]) -> int:
    """Write an experiment's report: report.md, results.json and figures/ (PNG)."""
    p = ArgumentParser(prog="pu-mlc report", allow_abbrev=False,
                                description="Write the report of a search (finished or not): "
                                            "report.md (the results table, paired "
                                            "differences, published rows, selected configs "
                                            "and their commands, CPU/GPU hours), results.json "
                                            "and figures/*.png. Ray need not be running.")
    p.add_argument("experiment_dir", help="the experiment folder (storage_path/name)")
    p.add_argument("--out", default=None, help="default: EXPERIMENT_DIR/report")
    p.add_argument("--relative-to", default=None, metavar="DIR",
                   help="write every path in the report relative to DIR (a report to commit, "
                        "e.g. docs/demo: --relative-to .)")
    ns = p.parse_args(list(argv))
    setup_logging()
    import importlib.util

    from pu_mlc.errors import ConfigError

    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("'report' draws its figures with matplotlib, which is not installed; "
                          "install it with pip install 'pu-mlc[search]'")
    written = write_report_to(ns.experiment_dir, ns.out, relative_to=ns.relative_to)
    results = written["results"]
    if results["partial"]:
        print(f"partial experiment: {len(results['unfinished'])} unfinished stud(y/ies): "
              + ", ".join(f"{k} ({v})" for k, v in results["unfinished"].items()))
    print(f"report written to {written['report_md']} ({len(written['figures'])} figure(s), "
          f"results.json alongside)")
    return 0


def tensorboard_command(experiment: str | Path) -> str:
    """The command that shows an experiment's TensorBoard runs: TensorBoard on its folder, or
    ``pu-mlc tensorboard`` for one in an object store (it copies the runs down first)."""
    if is_remote(str(experiment)):
        return f"pu-mlc tensorboard '{experiment}'"
    return f"tensorboard --logdir {Path(experiment) / 'tensorboard'}"


def run_tensorboard_command(argv: Sequence[str]) -> int:
    """Show an experiment's TensorBoard runs: for one in an object store, copy them to a local
    folder first (TensorBoard reads local folders; its own s3:// support needs TensorFlow)."""
    p = ArgumentParser(prog="pu-mlc tensorboard", allow_abbrev=False,
                       description=run_tensorboard_command.__doc__ + " Prints the command that "
                       "starts TensorBoard on the runs; run it again to fetch new epochs.")
    p.add_argument("experiment_dir", help="the experiment (storage_path/name): a folder, or "
                                          "an object-store URI such as s3://bucket/prefix/name")
    p.add_argument("--out", default=None,
                   help="local folder for the runs (default: ./<name>-tensorboard)")
    ns = p.parse_args(list(argv))
    setup_logging()
    from pu_mlc.files import check_writable_dir

    from .store import open_experiment

    store, spec = open_experiment(ns.experiment_dir)
    if not store.remote:
        print(f"tensorboard --logdir {store.tensorboard_dir}")
        return 0
    out = Path(ns.out or f"{spec.name}-tensorboard").resolve()
    check_writable_dir(out, "TensorBoard folder (--out)")
    copied = store.download(store.tensorboard_dir, out)
    print(f"{copied} file(s) of {store.uri(store.tensorboard_dir)} copied to {out}\n"
          f"  tensorboard --logdir {out}")
    return 0


def write_report_to(experiment: str | Path, out: Optional[str | Path] = None,
                    relative_to: Optional[str | Path] = None) -> dict:
    """The report of an experiment, written to ``out`` (a local folder) or into the experiment
    itself; for an experiment in an object store, written to a local temporary folder first and
    uploaded to its ``report/`` (the figures are drawn with local files)."""
    import shutil
    import tempfile

    from .report import write_report
    from .storage import is_remote
    from .store import ExperimentStore

    if out or not is_remote(str(experiment)):
        return write_report(experiment, out, relative_to=relative_to)
    store = ExperimentStore(str(experiment))
    local = Path(tempfile.mkdtemp(prefix="pumlc-report-"))
    try:
        written = write_report(experiment, local, relative_to=relative_to)
        store.upload(local, store.report_dir)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    remote = store.report_dir
    written["report_md"] = store.uri(remote / "report.md")
    written["results_json"] = store.uri(remote / "results.json")
    written["figures"] = [store.uri(remote / Path(f).relative_to(local).as_posix())
                          for f in written["figures"]]
    written["out_dir"] = store.uri(remote)
    return written


def run_demo_command(argv: Sequence[str]) -> int:
    """Build the built-in dataset if missing, then run the demo search on a local Ray."""
    p = ArgumentParser(prog="pu-mlc demo", allow_abbrev=False, description=run_demo_command.__doc__)
    p.add_argument("--data", default=str(DEMO_DATA), help="where the demo dataset lives")
    p.add_argument("--space", default=str(DEMO_SPACE))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ns = p.parse_args(list(argv))
    setup_logging()
    from pu_mlc.presets import ensure_demo_data

    from .preflight import check_inputs
    from .space_file import load_search_spec, parse_override

    data = ensure_demo_data(ns.data)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    overrides = {"fixed.data": str(data), "name": f"demo-{stamp}"}
    overrides.update(dict(parse_override(s) for s in ns.set))
    spec = load_search_spec(ns.space, overrides)
    check_inputs(spec)
    return _search_and_report(spec, resume=False)


#: The search's commands of ``pu-mlc`` (registered in pyproject.toml under the entry-point
#: group ``pu_mlc.commands``; ``train_entry.py`` passes them directly).
COMMANDS = {"search": run_search_command, "export": run_export_command,
            "report": run_report_command, "demo": run_demo_command,
            "tensorboard": run_tensorboard_command}


def main(argv: Sequence[str]) -> int:
    return guarded(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
