"""The figures of ``pu-mlc report`` (PNG, matplotlib's Agg canvas, no display needed).

Each figure is meant to be read without the text: its title says what is plotted, on what
task/study, and what the line styles mean.

- ``map_vs_proportion.png``: each method's test mAP (mean ± sd over repeats) against the
  known-label proportion, the published methods of the dataset as dashed lines;
- ``curves_<study>.png``: per study, every search trial's selection score per epoch (trials
  stopped by the scheduler dashed, failed/diverged ones red, the selected trial bold);
- ``importance_<study>.png``: PED-ANOVA parameter importances (:mod:`optuna.importance`) over
  the study's completed search trials; with too few trials, the raw score of each trial
  against each parameter instead, and the title says so;
- ``parallel_<study>.png``: parallel coordinates of the searched parameters and the score;
- ``per_class_ap_<task>.png``: per-class test AP of the selected PU-MLC model at the lowest
  label proportion against the best baseline's.
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

DPI = 110
#: Fewer completed search trials than this: no parameter importances (they would be noise).
MIN_IMPORTANCE_TRIALS = 5
STATUS_STYLE = {
    "finished": dict(linestyle="-", alpha=0.9),
    "stopped_by_scheduler": dict(linestyle="--", alpha=0.8),
    "failed": dict(linestyle=":", color="tab:red", alpha=0.9),
    "diverged": dict(linestyle=":", color="tab:red", alpha=0.9),
}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="png", dpi=DPI)


def make_figures(results: dict, objects: dict, out: Path) -> list[dict]:
    """Draw every figure into ``out``; return ``[{"kind", "title", "file", "note"?}, ...]``.
    A figure that cannot be drawn is skipped with a note, never sinks the report."""
    figures: list[dict] = []
    studies = objects["studies"]

    def attempt(kind: str, title: str, path: Path, draw, *args) -> None:
        try:
            note = draw(path, *args)
        except Exception as err:          # a figure is never worth losing the report over
            log.warning("figure %s not drawn: %s: %s", path.name, type(err).__name__, err)
            return
        entry = {"kind": kind, "title": title, "file": str(path)}
        if note:
            entry["note"] = note
        figures.append(entry)

    attempt("map_vs_proportion", "Test mAP against the known-label proportion",
            out / "map_vs_proportion.png", draw_map_vs_proportion, results)
    for name, study in studies.items():
        if not study.stage("search"):
            continue
        selected = study.selected
        attempt("curves", f"{name}: selection score per epoch",
                out / f"curves_{_safe(name)}.png", draw_curves, study, selected, results)
    for name, study in studies.items():
        if not study.stage("search") or not study.search_space:
            continue
        attempt("importance", f"{name}: parameter importances",
                out / f"importance_{_safe(name)}.png", draw_importance, study,
                results["studies"][name].get("importances"))
        attempt("parallel", f"{name}: parallel coordinates of the search",
                out / f"parallel_{_safe(name)}.png", draw_parallel, study, study.selected)
    per_class = _per_class_choice(results, studies)
    if per_class:
        task = per_class["task"]
        attempt("per_class_ap", f"{task}: per-class AP, {per_class['reference']} against "
                                f"{per_class['baseline']}",
                out / f"per_class_ap_{_safe(task)}.png", draw_per_class, per_class)
    return figures


# ------------------------------------------------------------------------ mAP vs proportion
def draw_map_vs_proportion(path: Path, results: dict) -> Optional[str]:
    from .published import published_prob

    fig = _figure(9, 5.5)
    ax = fig.add_subplot()
    cols = results["columns"]
    markers = "osD^v<>ph*"
    for i, (method, row) in enumerate(results["table"].items()):
        xs, ys, es = [], [], []
        for c in cols:
            cell = row["cells"].get(c["task"])
            if cell and cell["mean"] is not None:
                xs.append(100 * c["prob"])
                ys.append(cell["mean"])
                es.append(cell["sd"] or 0.0)
        if not xs:
            continue
        bold = method == results["reference_method"]
        dodge = 0.8 * (i - (len(results["table"]) - 1) / 2)   # error bars side by side
        ax.errorbar([x + dodge for x in xs], ys, yerr=es, marker=markers[i % len(markers)],
                    linestyle="-", color=f"C{i % 10}",
                    linewidth=2.6 if bold else 1.8, markersize=7, capsize=4,
                    label=f"{method} (this search)", zorder=3)
    pub = results["published"]
    if pub["rows"]:
        from matplotlib import colormaps

        cmap = colormaps["tab20b"]       # hues apart from the methods' own (tab10)
        prob_cols = [c for c in pub["columns"] if published_prob(c) is not None]
        for j, row in enumerate(pub["rows"]):
            ax.plot([100 * published_prob(c) for c in prob_cols],
                    [float(row[c]) for c in prob_cols], linestyle="--", linewidth=1.1,
                    color=cmap((4 * j + j // 5) % 20), marker=".",
                    label=f"{row['method']} (published)", zorder=2)
        note = None
        subtitle = f"dashed: published results on {results['published_dataset']}"
    else:
        note = f"No published lines: {results['dataset_note']}."
        subtitle = "\n".join(textwrap.wrap(note, 100))
    ax.set_xlabel("known-label proportion (%)")
    ax.set_ylabel("test mAP (%)")
    ax.set_xlim(0, 105)
    ax.set_xticks([10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    ax.grid(True, alpha=0.3)
    spread = (f"mean ± sd over {results['repeats']} repeat(s)" if results["repeats"]
              else "selected trial, no repeats")
    ax.set_title(f"{results['name']}: test mAP vs known-label proportion\n({spread}; "
                 f"protocol: {results['protocol']['name']})\n{subtitle}", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    return note


# ------------------------------------------------------------------------------ curves
def draw_curves(path: Path, study, selected, results: dict) -> Optional[str]:
    from matplotlib.lines import Line2D

    fig = _figure(8, 5)
    ax = fig.add_subplot()
    trials = study.stage("search")
    shown = 0
    for t in trials:
        pts = [(h.get("epoch"), h.get("score")) for h in t.history
               if h.get("epoch") is not None and isinstance(h.get("score"), (int, float))
               and math.isfinite(h["score"])]
        if not pts:
            continue
        shown += 1
        style = dict(STATUS_STYLE.get(t.status, dict(linestyle="-.", alpha=0.7)))
        is_selected = selected is not None and t.trial_id == selected.trial_id
        xs, ys = zip(*pts)
        if is_selected:        # a black halo under the line: visible even where others overlap
            ax.plot(xs, ys, color="black", linewidth=5, marker="o", markersize=11, zorder=2,
                    linestyle=style["linestyle"])
        ax.plot(xs, ys, marker="o", markersize=5, linewidth=1.6, zorder=3, **style,
                label=f"{t.trial_id} ({t.status})" + (" = selected" if is_selected else ""))
        if t.status != "finished":
            ax.plot(xs[-1], ys[-1], marker="x", markersize=10, color="tab:red", zorder=4)
    protocol = results["protocol"]["name"]
    what = ("test mAP (paper protocol)" if protocol == "paper" else
            f"validation mAP on {100 * study.prob:g}%-known labels")
    ax.set_title(f"{study.name}: selection score per epoch of each search trial\n"
                 f"({what})\nsolid: finished; dashed + x: stopped by the scheduler; "
                 f"red dotted: failed/diverged; black halo: selected", fontsize=9)
    max_epochs = max([int(t.config.get("train_epochs") or 0) for t in trials]
                     + [int(h.get("epoch") or 0) for t in trials for h in t.history] + [1])
    ax.set_xlim(0.5, max_epochs + 0.5)
    ax.set_xlabel(f"epoch (of {max_epochs})")
    ax.set_ylabel("selection score (mAP %)")
    ax.grid(True, alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > 12:           # many trials: a legend of the styles, not of the trials
        handles = [Line2D([], [], color="gray", linestyle="-", label="finished"),
                   Line2D([], [], color="gray", linestyle="--", label="stopped by scheduler"),
                   Line2D([], [], color="tab:red", linestyle=":", label="failed / diverged"),
                   Line2D([], [], color="black", linewidth=3, label="selected")]
        labels = [h.get_label() for h in handles]
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if not shown:
        ax.text(0.5, 0.5, "no trial has finished an epoch yet", ha="center", va="center",
                transform=ax.transAxes)
    _save(fig, path)
    return None if shown else "No trial of this study has finished an epoch yet."


# -------------------------------------------------------------------------- importances
def _optuna_distribution(dist):
    import optuna

    if dist.type == "choice":
        return optuna.distributions.CategoricalDistribution(list(dist.values))
    if dist.type == "int":
        return optuna.distributions.IntDistribution(int(dist.low), int(dist.high), log=dist.log)
    return optuna.distributions.FloatDistribution(float(dist.low), float(dist.high),
                                                  log=dist.type == "loguniform")


def _completed(study) -> list:
    return [t for t in study.stage("search") if t.status == "finished"
            and t.selection_score is not None
            and all(k in t.params for k in study.search_space)]


def importances(study) -> Optional[dict[str, float]]:
    """PED-ANOVA importances over the study's completed search trials (rebuilt as an
    in-memory Optuna study from the trial files), or None below ``MIN_IMPORTANCE_TRIALS``."""
    import optuna

    done = _completed(study)
    if len(done) < MIN_IMPORTANCE_TRIALS or len(study.search_space) < 2:
        return None            # one parameter is trivially all of it: nothing to learn
    dists = {k: _optuna_distribution(d) for k, d in study.search_space.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    memory = optuna.create_study(direction="maximize")
    for t in done:
        params = {k: t.params[k] for k in dists}
        if not all(dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in params.items()):
            continue
        memory.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                   value=t.selection_score))
    if len(memory.trials) < MIN_IMPORTANCE_TRIALS:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(optuna.importance.get_param_importances(
            memory, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))


def draw_importance(path: Path, study, imp: Optional[dict[str, float]]) -> Optional[str]:
    """``imp``: :func:`importances` of the study (None: too few trials, drawn as raw values)."""
    done = _completed(study)
    if imp is not None:
        fig = _figure(7, 1.2 + 0.55 * len(imp))
        ax = fig.add_subplot()
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="tab:blue")
        for y, n in enumerate(names):
            ax.text(imp[n], y, f" {imp[n]:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max(1.0, max(imp.values()) * 1.15))
        ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
        ax.set_title(f"{study.name}: parameter importances for the selection score\n"
                     f"(optuna.importance.PedAnovaImportanceEvaluator over {len(done)} "
                     f"completed search trials)", fontsize=9)
        _save(fig, path)
        return None
    # too few trials: show the raw evidence instead, and say so
    names = list(study.search_space)
    fig = _figure(3.2 * max(1, len(names)), 3.8)
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    trials = [t for t in study.stage("search") if t.selection_score is not None]
    for ax, name in zip(axes, names):
        dist = study.search_space[name]
        for t in trials:
            if name not in t.params:
                continue
            value = t.params[name]
            x = list(dist.values).index(value) if dist.type == "choice" and \
                value in dist.values else value
            finished = t.status == "finished"
            ax.scatter([x], [t.selection_score], s=50,
                       facecolors="tab:blue" if finished else "none",
                       edgecolors="tab:red" if t.status in ("failed", "diverged")
                       else "tab:blue")
        if dist.type == "choice":
            ax.set_xticks(range(len(dist.values)))
            ax.set_xticklabels([f"{v:g}" if isinstance(v, float) else str(v)
                                for v in dist.values], fontsize=7)
            ax.set_xlim(-0.5, len(dist.values) - 0.5)
        else:
            ax.set_xlim(dist.low, dist.high)
            if dist.type == "loguniform" or dist.log:
                ax.set_xscale("log")
                ticks = [dist.low, math.sqrt(dist.low * dist.high), dist.high]
                ax.set_xticks(ticks)
                ax.set_xticklabels([f"{v:.3g}" for v in ticks], fontsize=7)
                ax.minorticks_off()
        ax.set_xlabel(f"{name} ({dist.describe()})", fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("selection score (mAP %)")
    why = (f"{len(done)} completed trial(s) < {MIN_IMPORTANCE_TRIALS}" if len(names) > 1 or
           len(done) < MIN_IMPORTANCE_TRIALS else "a single searched parameter")
    fig.suptitle(f"{study.name}: not enough trials for parameter importances ({why});\n"
                 f"each search trial's selection score against each parameter instead "
                 f"(hollow: stopped early)", fontsize=9)
    _save(fig, path)
    return (f"Not enough trials for parameter importances ({why}); the figure shows each "
            f"trial's selection score against each searched parameter instead.")


# ---------------------------------------------------------------------- parallel coordinates
def _normalise(dist, value) -> Optional[float]:
    if dist.type == "choice":
        if value not in dist.values:
            return None
        k = len(dist.values)
        return 0.5 if k == 1 else list(dist.values).index(value) / (k - 1)
    if not isinstance(value, (int, float)):
        return None
    lo, hi = float(dist.low), float(dist.high)
    if dist.type == "loguniform" or dist.log:
        if value <= 0 or lo <= 0:
            return None
        lo, hi, value = math.log10(lo), math.log10(hi), math.log10(value)
    return 0.5 if hi == lo else (value - lo) / (hi - lo)


def _axis_labels(dist) -> list[tuple[float, str]]:
    if dist.type == "choice":
        k = len(dist.values)
        return [(0.5 if k == 1 else i / (k - 1), f"{v:g}" if isinstance(v, float) else str(v))
                for i, v in enumerate(dist.values)]
    return [(0.0, f"{dist.low:.3g}"), (1.0, f"{dist.high:.3g}")]


def draw_parallel(path: Path, study, selected) -> Optional[str]:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    names = list(study.search_space)
    trials = [t for t in study.stage("search") if t.selection_score is not None]
    fig = _figure(max(6.0, 2.0 * (len(names) + 1) + 1.5), 5)
    ax = fig.add_subplot()
    scores = [t.selection_score for t in trials]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    norm = Normalize(vmin=lo, vmax=hi)
    cmap = colormaps["viridis"]
    xs = list(range(len(names) + 1))
    for t in sorted(trials, key=lambda t: t.selection_score):
        ys = [_normalise(study.search_space[n], t.params.get(n)) for n in names]
        ys = [math.nan if y is None else y for y in ys]
        ys.append(norm(t.selection_score))
        is_selected = selected is not None and t.trial_id == selected.trial_id
        style = "-" if t.status == "finished" else "--"
        if is_selected:
            ax.plot(xs, ys, color="black", linewidth=5, zorder=2)
        ax.plot(xs, ys, color=cmap(norm(t.selection_score)), linestyle=style,
                linewidth=2.2 if is_selected else 1.4, marker="o", markersize=4, zorder=3)
    for i, n in enumerate(names):
        ax.axvline(i, color="gray", linewidth=0.8, zorder=1)
        for y, text in _axis_labels(study.search_space[n]):
            ax.text(i, y, f" {text}", fontsize=7, va="center", ha="left", color="dimgray")
    ax.axvline(len(names), color="gray", linewidth=0.8, zorder=1)
    ax.text(len(names), 0.0, f" {lo:.2f}", fontsize=7, va="center", color="dimgray")
    ax.text(len(names), 1.0, f" {hi:.2f}", fontsize=7, va="center", color="dimgray")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{n}\n({study.search_space[n].type})" for n in names]
                       + ["selection\nscore"], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlim(-0.3, len(names) + 0.6)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="selection score (mAP %)")
    ax.set_title(f"{study.name}: searched parameters of {len(trials)} search trial(s), "
                 f"coloured by selection score\n(each axis spans its search range, log "
                 f"for loguniform; dashed: stopped early; black outline: selected)",
                 fontsize=9)
    if not trials:
        ax.text(0.5, 0.5, "no search trial has reported a score yet", ha="center",
                va="center", transform=ax.transAxes)
    _save(fig, path)
    return None if trials else "No search trial has reported a score yet."


# --------------------------------------------------------------------------- per-class AP
def _per_class_choice(results: dict, studies: dict) -> Optional[dict[str, Any]]:
    """The lowest label proportion where the reference method and a baseline both have a
    selected trial with per-class APs; the baseline with the best cell there."""
    ref = results["reference_method"]
    for col in results["columns"]:                           # sorted by proportion
        task = col["task"]
        ref_study = next((s for s in studies.values() if s.task == task and s.method == ref),
                         None)
        ref_trial = ref_study.selected if ref_study else None
        if ref_trial is None or not ref_trial.per_class_ap:
            continue
        candidates = []
        for method, row in results["table"].items():
            cell = row["cells"].get(task)
            if method == ref or not cell:
                continue
            study = studies.get(cell["study"])
            trial = study.selected if study else None
            if trial is None or not trial.per_class_ap:
                continue
            value = cell["mean"] if cell["mean"] is not None else trial.test_map
            candidates.append((value if value is not None else -math.inf, method, trial))
        if not candidates:
            continue
        value, method, trial = max(candidates, key=lambda c: c[0])
        return {"task": task, "prob": col["prob"], "reference": ref, "baseline": method,
                "reference_trial": ref_trial, "baseline_trial": trial}
    return None


def draw_per_class(path: Path, choice: dict) -> Optional[str]:
    import numpy as np

    a, b = choice["reference_trial"], choice["baseline_trial"]
    classes = [c for c in a.per_class_ap if c in b.per_class_ap]
    no_pos = set(a.classes_without_positives) | set(b.classes_without_positives)
    classes.sort(key=lambda c: a.per_class_ap[c] - b.per_class_ap[c])
    fig = _figure(8, 1.6 + 0.28 * len(classes))
    ax = fig.add_subplot()
    y = np.arange(len(classes))
    h = 0.4
    ax.barh(y + h / 2, [a.per_class_ap[c] for c in classes], h, color="tab:blue",
            label=f"{choice['reference']} (trial {a.trial_id}, mAP {_map(a)})")
    ax.barh(y - h / 2, [b.per_class_ap[c] for c in classes], h, color="tab:orange",
            label=f"{choice['baseline']} (trial {b.trial_id}, mAP {_map(b)})")
    ax.set_yticks(y)
    ax.set_yticklabels([c + (" (no test positives)" if c in no_pos else "") for c in classes],
                       fontsize=8 if len(classes) <= 30 else 6)
    ax.set_xlabel("test AP (%)")
    ax.set_xlim(0, 105)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{choice['task']} ({100 * choice['prob']:g}% known labels, the lowest "
                 f"proportion): per-class test AP of the selected models\n{choice['reference']}"
                 f" against the best baseline, {choice['baseline']}; classes sorted by "
                 f"difference", fontsize=9)
    _save(fig, path)
    if no_pos:
        return (f"Classes without a positive test image (AP meaningless): "
                f"{', '.join(sorted(no_pos))}.")
    return None


def _map(trial) -> str:
    return f"{trial.test_map:.2f}" if trial.test_map is not None else "—"
