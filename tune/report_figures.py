"""The figures of ``pu-mlc report`` (PNG, matplotlib's Agg canvas, no display needed).

Each figure is meant to be read without the text: its title says what is plotted, on what
task/study, and what the line styles mean. None may suggest more than was measured:

- ``map_vs_proportion.png``: each method's test mAP against the known-label proportion, a
  marker at each proportion that was run and nowhere else; a line only between two measured
  proportions that are neighbours on the 10% grid (never across a proportion that was not
  run); error bars (± 1 sd) only where repeats give a spread; the chance mAP of the test split
  as a dotted line; axes scaled to the data; the methods side by side at each proportion, by a
  small shift the title states (methods that are one study share one position, and the legend
  says so). The published methods of the
  dataset are dashed. What is plotted is read back from the figure's artists into
  ``results.json`` (``figures[].data``), so a test compares the figure with the table;
- ``curves_<study>.png``: per study, every search trial's selection score per epoch (trials
  stopped by the scheduler dashed, failed/diverged ones red, the selected trial bold); with
  one epoch, a dot chart of each trial's regular and EMA score instead of one-point "curves";
- ``importance_<study>.png``: PED-ANOVA parameter importances (:mod:`optuna.importance`) over
  the study's completed search trials; with too few trials, the raw score of each trial
  against each parameter instead, and the title says so;
- ``parallel_<study>.png``: parallel coordinates of the searched parameters and the score;
- ``per_class_ap_<task>.png``: per-class test AP of the selected PU-MLC model at the lowest
  label proportion against the best baseline's, the AP axis scaled to the values.
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


def _named(study) -> str:
    """A study's name, with the methods it stands for when it is one study for several."""
    methods = tuple(getattr(study, "methods", ()) or ())
    return study.name + (f" ({' = '.join(methods)})" if len(methods) > 1 else "")


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="png", dpi=DPI)


def make_figures(results: dict, objects: dict, out: Path) -> list[dict]:
    """Draw every figure into ``out``; return ``[{"kind", "title", "file", "note"?}, ...]``.
    A figure that cannot be drawn is skipped with a note, never sinks the report."""
    figures: list[dict] = []
    studies = objects["studies"]

    def attempt(kind: str, title: str, path: Path, draw, *args) -> None:
        try:
            drawn = draw(path, *args)
        except Exception as err:          # a figure is never worth losing the report over
            log.warning("figure %s not drawn: %s: %s", path.name, type(err).__name__, err)
            return
        entry = {"kind": kind, "title": title, "file": str(path)}
        note, data = (drawn.get("note"), drawn.get("data")) if isinstance(drawn, dict) \
            else (drawn, None)
        if note:
            entry["note"] = note
        if data is not None:
            entry["data"] = data
        figures.append(entry)

    attempt("map_vs_proportion", "Test mAP against the known-label proportion",
            out / "map_vs_proportion.png", draw_map_vs_proportion, results)
    for name, study in studies.items():
        if not study.stage("search"):
            continue
        selected = study.selected
        attempt("curves", f"{_named(study)}: selection score per epoch",
                out / f"curves_{_safe(name)}.png", draw_curves, study, selected, results)
    for name, study in studies.items():
        if not study.stage("search") or not study.search_space:
            continue
        attempt("importance", f"{_named(study)}: parameter importances",
                out / f"importance_{_safe(name)}.png", draw_importance, study,
                results["studies"][name].get("importances"))
        attempt("parallel", f"{_named(study)}: parallel coordinates of the search",
                out / f"parallel_{_safe(name)}.png", draw_parallel, study, study.selected)
    per_class = _per_class_choice(results, studies)
    if per_class:
        task = per_class["task"]
        attempt("per_class_ap", f"{task}: per-class AP, {per_class['reference']} against "
                                f"{per_class['baseline']}",
                out / f"per_class_ap_{_safe(task)}.png", draw_per_class, per_class)
    return figures


# ------------------------------------------------------------------------ mAP vs proportion
#: Two measured proportions are joined by a line only when they are neighbours on the grid the
#: paper's tables use (10% steps): a line across 10% .. 100% would draw 20% .. 90% unmeasured.
GRID_STEP = 10.0
#: How far apart methods are drawn at one proportion, as a share of the proportions' span (the
#: title says so): their error bars would otherwise lie on top of each other.
DODGE = 0.012


def _joined(xs: list[float]) -> list[tuple[int, int]]:
    """Index pairs of consecutive measured proportions (in %) that a line may join."""
    return [(i, i + 1) for i in range(len(xs) - 1) if xs[i + 1] - xs[i] <= GRID_STEP + 1e-9]


def draw_map_vs_proportion(path: Path, results: dict) -> dict:
    from matplotlib.lines import Line2D

    from .published import published_prob

    fig = _figure(9, 6.5)
    ax = fig.add_subplot()
    cols = results["columns"]
    markers = "osD^v<>ph*"
    handles: list = []
    values: list[float] = []
    xs_all: list[float] = []
    shared = {e["study"]: e for e in results.get("equivalences") or []}
    plotted = [m for m, row in results["table"].items()
               if any(c["mean"] is not None for c in row["cells"].values())]
    measured_x = sorted({100 * c["prob"] for c in cols})
    span = (measured_x[-1] - measured_x[0]) if len(measured_x) > 1 else 90.0
    # methods side by side (said in the title): their error bars would hide each other
    dodge = {m: DODGE * span * (k - (len(plotted) - 1) / 2) for k, m in enumerate(plotted)}
    offsets: dict[str, dict[str, float]] = {}
    for i, (method, row) in enumerate(results["table"].items()):
        pts = []
        for c in cols:
            cell = row["cells"].get(c["task"])
            if cell and cell["mean"] is not None:
                sd = cell["sd"] if cell.get("n", 0) >= 2 else None
                owner = cell.get("same_study_as") or method    # one study: one position
                pts.append((100 * c["prob"], cell["mean"], sd, dodge.get(owner, 0.0)))
        if not pts:
            continue
        offsets[method] = {f"{x:g}": off for x, _, _, off in pts}
        color, marker = f"C{i % 10}", markers[i % len(markers)]
        bold = method == results["reference_method"]
        xs = [p[0] for p in pts]
        shown_x = [p[0] + p[3] for p in pts]
        ys = [p[1] for p in pts]
        ax.plot(shown_x, ys, linestyle="none", marker=marker, markersize=8 if bold else 7,
                color=color, zorder=4, gid=f"points:{method}",
                fillstyle="full" if bold else "none", markeredgewidth=1.8)
        for a, b in _joined(xs):
            ax.plot([shown_x[a], shown_x[b]], [ys[a], ys[b]], linestyle="-", color=color,
                    linewidth=2.4 if bold else 1.6, zorder=3, gid=f"segment:{method}")
        bars = [(x + off, y, e) for x, y, e, off in pts if e is not None]
        if bars:
            container = ax.errorbar([b[0] for b in bars], [b[1] for b in bars],
                                    yerr=[b[2] for b in bars], linestyle="none", marker="none",
                                    color=color, capsize=4, zorder=3)
            container.lines[2][0].set_gid(f"errorbar:{method}")
        values += [y - (e or 0) for _, y, e, _ in pts] + [y + (e or 0) for _, y, e, _ in pts]
        xs_all += xs
        label = f"{method} (this search" + (", ± 1 sd over repeats" if bars else "") + ")"
        handles.append(Line2D([], [], color=color, marker=marker, markersize=7,
                              fillstyle="full" if bold else "none", markeredgewidth=1.8,
                              linestyle="-" if _joined(xs) else "none", label=label))
    chance = sorted({round(c["chance_mAP"], 9) for c in cols if c.get("chance_mAP") is not None})
    if len(chance) == 1:
        ax.axhline(chance[0], color="dimgray", linestyle=":", linewidth=1.6, zorder=2,
                   gid="chance")
    else:                                  # test splits differ: a short mark at each column
        for c in cols:
            if c.get("chance_mAP") is not None:
                x = 100 * c["prob"]
                ax.plot([x - 2, x + 2], [c["chance_mAP"]] * 2, color="dimgray", linestyle=":",
                        linewidth=1.6, zorder=2, gid="chance")
    if chance:
        values += chance
        handles.append(Line2D([], [], color="dimgray", linestyle=":", linewidth=1.6,
                              label="chance: mean class prevalence of the test split ("
                                    + ", ".join(f"{v:.2f}" for v in chance) + ")"))
    pub = results["published"]
    note = None
    if pub["rows"]:
        from matplotlib import colormaps

        cmap = colormaps["tab20b"]       # hues apart from the methods' own (tab10)
        prob_cols = [c for c in pub["columns"] if published_prob(c) is not None]
        for j, row in enumerate(pub["rows"]):
            pxs = [100 * published_prob(c) for c in prob_cols if row.get(c) not in (None, "")]
            pys = [float(row[c]) for c in prob_cols if row.get(c) not in (None, "")]
            color = cmap((4 * j + j // 5) % 20)
            ax.plot(pxs, pys, linestyle="none", marker=".", color=color, zorder=2,
                    gid=f"published_points:{row['method']}")
            for a, b in _joined(pxs):
                ax.plot([pxs[a], pxs[b]], [pys[a], pys[b]], linestyle="--", linewidth=1.1,
                        color=color, zorder=2, gid=f"published_segment:{row['method']}")
            handles.append(Line2D([], [], color=color, linestyle="--", marker=".",
                                  label=f"{row['method']} (published)"))
            values += pys
            xs_all += pxs
        subtitle = f"dashed: published results on {results['published_dataset']}"
    else:
        note = f"No published lines: {results['dataset_note']}."
        subtitle = "\n".join(textwrap.wrap(note, 100))
    measured = sorted(set(xs_all))
    if measured:
        ax.set_xlim(measured[0] - 6 - DODGE * span * len(plotted) / 2,
                    measured[-1] + 6 + DODGE * span * len(plotted) / 2)
        ax.set_xticks(measured)
        ax.set_xticklabels([f"{x:g}%" for x in measured])
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.08 * (hi - lo), 0.5)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("known-label proportion (%): markers only where a task was run")
    ax.set_ylabel("test mAP (%)")
    ax.grid(True, alpha=0.3)
    if results["repeats"]:
        spread = "mean over repeats, error bars ± 1 sd where n ≥ 2"
    else:
        spread = "the selected trial of each study: no repeats, no error bars, ranking unsupported"
    joined = any(l.get_gid() and l.get_gid().startswith("segment:") for l in ax.get_lines())
    lines_note = ("lines join neighbouring proportions only" if joined else
                  "no lines: no two measured proportions are neighbours")
    side = max((abs(v) for v in dodge.values()), default=0.0)
    offset_note = (f"methods drawn side by side, each shifted by at most {side:.1f} points "
                   f"from the proportion it was run at" if side else "")
    detail = "\n".join(textwrap.wrap(f"({spread}; protocol: {results['protocol']['name']}; "
                                     f"{lines_note}" + (f"; {offset_note}" if side else "")
                                     + ")", 110))
    fig.suptitle(f"{results['name']}: test mAP vs known-label proportion\n{detail}\n"
                 f"{subtitle}", fontsize=9)
    for e in shared.values():
        handles.append(Line2D([], [], linestyle="none", marker="$‡$", color="black",
                              label=f"{' = '.join(e['methods'])} at {_pct(e['prob'])}: one "
                                    f"study (they train identically), one point"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13),
              ncol=2, frameon=False)
    _save(fig, path)
    data = plotted_data(ax)
    data.update(offsets=offsets, offset_note=offset_note)
    return {"note": note, "data": data}


def _pct(prob: float) -> str:
    return f"{100 * prob:g}%"


def plotted_data(ax) -> dict[str, Any]:
    """What the axes hold, read back from its artists (not from what was meant to be drawn):
    per method the markers, the line segments and the error bars, the chance level(s), the
    published series, and the axis limits."""
    out: dict[str, Any] = {"points": {}, "segments": {}, "errorbars": {}, "chance": [],
                           "published_points": {}, "published_segments": {},
                           "xlim": [float(v) for v in ax.get_xlim()],
                           "ylim": [float(v) for v in ax.get_ylim()],
                           "xticks": [float(v) for v in ax.get_xticks()]}
    for line in ax.get_lines():
        gid = line.get_gid() or ""
        kind, _, name = gid.partition(":")
        xs = [float(v) for v in line.get_xdata()]
        ys = [float(v) for v in line.get_ydata()]
        if kind == "chance":
            out["chance"].append({"y": ys[0], "x": xs,
                                  "spans_axis": line.get_transform() is not ax.transData})
        elif kind in ("points", "published_points"):
            out[kind][name] = {"x": xs, "y": ys, "linestyle": line.get_linestyle()}
        elif kind in ("segment", "published_segment"):
            out[kind + "s"].setdefault(name, []).append({"x": xs, "y": ys})
    for collection in ax.collections:
        kind, _, name = (collection.get_gid() or "").partition(":")
        if kind == "errorbar":
            out["errorbars"][name] = [{"x": float(seg[0][0]), "low": float(min(seg[0][1],
                                                                               seg[1][1])),
                                       "high": float(max(seg[0][1], seg[1][1]))}
                                      for seg in collection.get_segments()]
    return out


# ------------------------------------------------------------------------------ curves
def _epoch_scores(record: dict) -> tuple[Optional[float], Optional[float]]:
    """(regular, EMA) score of one epoch record, whichever protocol wrote it."""
    for regular, ema in (("val_mAP", "val_mAP_ema"), ("mAP", "mAP_ema")):
        if isinstance(record.get(regular), (int, float)):
            value = record.get(ema)
            return float(record[regular]), float(value) if isinstance(value, (int, float)) \
                else None
    return None, None


def draw_curves(path: Path, study, selected, results: dict) -> Optional[str]:
    trials = study.stage("search")
    max_epochs = max([int(t.config.get("train_epochs") or 0) for t in trials]
                     + [int(h.get("epoch") or 0) for t in trials for h in t.history] + [1])
    protocol = results["protocol"]["name"]
    what = ("test mAP (paper protocol)" if protocol == "paper" else
            f"validation mAP on {100 * study.prob:g}%-known labels")
    if max_epochs == 1:
        return _draw_one_epoch(path, study, selected, trials, what)
    from matplotlib.lines import Line2D

    fig = _figure(8, 5)
    ax = fig.add_subplot()
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
    ax.set_title(f"{_named(study)}: selection score per epoch of each search trial\n"
                 f"({what})\nsolid: finished; dashed + x: stopped by the scheduler; "
                 f"red dotted: failed/diverged; black halo: selected", fontsize=9)
    ax.set_xlim(0.5, max_epochs + 0.5)
    ax.set_xlabel(f"epoch (of {max_epochs})")
    ax.set_ylabel("selection score (mAP %)")
    ax.grid(True, alpha=0.3)
    if max_epochs <= 20:
        ax.set_xticks(range(1, max_epochs + 1))
    else:
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
    return {"note": None if shown else "No trial of this study has finished an epoch yet.",
            "data": {"mode": "lines", "xticks": [float(v) for v in ax.get_xticks()],
                     "xlim": [float(v) for v in ax.get_xlim()]}}


def _draw_one_epoch(path: Path, study, selected, trials, what: str) -> Optional[str]:
    """One epoch per trial: a "curve" would be one dot on an empty axis. Instead one row per
    trial (best first): its regular and EMA weights' score, the selected weights ringed."""
    rows = []
    for t in trials:
        record = t.history[0] if t.history else {}
        regular, ema = _epoch_scores(record)
        if regular is None and ema is None:
            continue
        rows.append((t, regular, ema))
    rows.sort(key=lambda r: max(v for v in r[1:] if v is not None))
    fig = _figure(8, 1.8 + 0.45 * max(len(rows), 1))
    ax = fig.add_subplot()
    for y, (t, regular, ema) in enumerate(rows):
        present = [v for v in (regular, ema) if v is not None]
        ax.plot([min(present), max(present)], [y, y], color="lightgray", linewidth=2, zorder=1)
        if regular is not None:
            ax.plot([regular], [y], marker="o", color="tab:blue", markersize=8, zorder=3,
                    linestyle="none")
        if ema is not None:
            ax.plot([ema], [y], marker="s", color="tab:orange", markersize=8, zorder=3,
                    linestyle="none")
        if selected is not None and t.trial_id == selected.trial_id:
            chosen = ema if selected.selected_weights == "ema" else regular
            if chosen is not None:
                ax.plot([chosen], [y], marker="o", markersize=17, markerfacecolor="none",
                        markeredgecolor="black", markeredgewidth=2, zorder=4,
                        linestyle="none")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{t.trial_id} ({t.status})"
                        + (" = selected" if selected is not None
                           and t.trial_id == selected.trial_id else "")
                        for t, _, _ in rows], fontsize=8)
    values = [v for _, a, b in rows for v in (a, b) if v is not None]
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.1 * (hi - lo), 0.5)
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"selection score after the only epoch: {what} (%)")
    ax.grid(True, axis="x", alpha=0.3)
    from matplotlib.lines import Line2D

    ax.legend(handles=[Line2D([], [], marker="o", color="tab:blue", linestyle="none",
                              label="regular weights"),
                       Line2D([], [], marker="s", color="tab:orange", linestyle="none",
                              label="EMA weights"),
                       Line2D([], [], marker="o", markerfacecolor="none", markersize=12,
                              markeredgecolor="black", linestyle="none",
                              label="selected (trial and weights)")],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{_named(study)}: each search trial's score after its one epoch\n"
                 f"(one epoch per trial: no curves to draw; trials sorted by their best "
                 f"score)", fontsize=9)
    if not rows:
        ax.text(0.5, 0.5, "no trial has finished an epoch yet", ha="center", va="center",
                transform=ax.transAxes)
    _save(fig, path)
    return {"note": None if rows else "No trial of this study has finished an epoch yet.",
            "data": {"mode": "one_epoch", "trials": [t.trial_id for t, _, _ in rows],
                     "regular": [r for _, r, _ in rows], "ema": [e for _, _, e in rows],
                     "xlim": [float(v) for v in ax.get_xlim()]}}


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
        ax.set_title(f"{_named(study)}: parameter importances for the selection score\n"
                     f"(optuna.importance.PedAnovaImportanceEvaluator over {len(done)} "
                     f"completed search trials)", fontsize=9)
        _save(fig, path)
        return {"note": None, "data": {"importances": dict(imp)}}
    # too few trials: show the raw evidence instead, and say so
    names = list(study.search_space)
    width = max(7.0, 3.2 * max(1, len(names)))
    fig = _figure(width, 4.2)
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
    title = (f"{_named(study)}: not enough trials for parameter importances ({why}); each "
             f"search trial's selection score against each parameter instead (hollow: "
             f"stopped early)")
    fig.suptitle("\n".join(textwrap.wrap(title, int(width * 13))), fontsize=9)
    _save(fig, path)
    return {"note": f"Not enough trials for parameter importances ({why}); the figure shows "
                    f"each trial's selection score against each searched parameter instead.",
            "data": {"importances": None,
                     "points": {t.trial_id: [t.params.get(n) for n in names]
                                + [t.selection_score] for t in trials}}}


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
    fig = _figure(max(8.0, 2.0 * (len(names) + 1) + 1.5), 5)
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
    # each axis's value labels sit left of it, on a white box: never on the markers, which
    # lie on the axis itself
    label_box = dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none",
                     alpha=0.9)
    for i, n in enumerate(names):
        ax.axvline(i, color="gray", linewidth=0.8, zorder=1)
        for y, text in _axis_labels(study.search_space[n]):
            ax.text(i - 0.04, y, text, fontsize=7, va="center", ha="right", color="dimgray",
                    bbox=label_box, zorder=5)
    ax.axvline(len(names), color="gray", linewidth=0.8, zorder=1)
    for y, text in ((0.0, f"{lo:.2f}"), (1.0, f"{hi:.2f}")):   # right of the last axis
        ax.text(len(names) + 0.04, y, text, fontsize=7, va="center", ha="left",
                color="dimgray", bbox=label_box, zorder=5)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{n}\n({study.search_space[n].type})" for n in names]
                       + ["selection\nscore"], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlim(-0.45, len(names) + 0.4)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="selection score (mAP %)")
    fig.suptitle(f"{_named(study)}: searched parameters of {len(trials)} search trial(s), "
                 f"coloured by selection score\n(each axis spans its search range, log "
                 f"for loguniform; dashed: stopped early; black outline: selected)",
                 fontsize=9)
    if not trials:
        ax.text(0.5, 0.5, "no search trial has reported a score yet", ha="center",
                va="center", transform=ax.transAxes)
    _save(fig, path)
    return {"note": None if trials else "No search trial has reported a score yet.",
            "data": {"axes": [*names, "selection score"],
                     "trials": {t.trial_id: t.selection_score for t in trials}}}


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
    fig = _figure(8, 2.2 + 0.28 * len(classes))
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
    largest = max([a.per_class_ap[c] for c in classes] + [b.per_class_ap[c] for c in classes]
                  + [1.0])
    ax.set_xlim(0, min(100.0, largest * 1.12 + 1.0))        # scaled to the APs, never past 100
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16 - 0.6 / (1 + len(classes))),
              ncol=2, frameon=False)                      # below the bars, never on them
    ax.set_title(f"{choice['task']} ({100 * choice['prob']:g}% known labels, the lowest "
                 f"proportion): per-class test AP of the selected models\n{choice['reference']}"
                 f" against the best baseline, {choice['baseline']}; classes sorted by "
                 f"difference", fontsize=9)
    _save(fig, path)
    note = (f"Classes without a positive test image (AP meaningless): "
            f"{', '.join(sorted(no_pos))}." if no_pos else None)
    return {"note": note, "data": {"xlim": [float(v) for v in ax.get_xlim()],
                                   "largest_ap": float(largest)}}


def _map(trial) -> str:
    return f"{trial.test_map:.2f}" if trial.test_map is not None else "—"
