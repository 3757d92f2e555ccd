"""The ``pu-mlc`` command (also ``python -m pu_mlc`` and ``train_entry.py``).

Subcommands: ``train`` (one run; the default, so the paper's command lines work unchanged),
``evaluate`` and ``predict`` (a run's ``best.pt``), ``make-demo-data`` and ``demo-train`` (the
built-in dataset), and the search side ``search``, ``export``, ``report``, ``demo``: commands the
search package (``tune``) registers under the entry-point group :data:`COMMAND_GROUP`, loaded only
when asked for. The library never imports the search built on it, and a single training run
never imports Ray.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from .argparse_tools import ArgumentParser
from .errors import PUMLCError

log = logging.getLogger("pu_mlc")


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def setup_logging(verbose: bool = False) -> None:
    """INFO on rank 0, warnings only on the other ranks of a torchrun job."""
    level = logging.DEBUG if verbose else (logging.INFO if process_rank() == 0 else
                                           logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", force=True)


def run_train(argv: Sequence[str]) -> int:
    from .config import parse_train_args

    cfg, ns = parse_train_args(argv, prog=_prog("train"))
    setup_logging(ns.verbose)
    from .engine import fit

    result = fit(cfg)
    if process_rank() == 0:
        r = result["result"]
        out = os.path.abspath(result["config"]["output_dir"])
        if r["test_mAP"] is not None:
            print(f"test mAP {r['test_mAP']:.2f} ({cfg.protocol} protocol; selected "
                  f"{r['selected_model']} model at epoch {r['selected_epoch']}); results in "
                  f"{out}")
        else:
            print(f"no epoch trained; results in {out}")
    return 0


def run_make_demo_data(argv: Sequence[str]) -> int:
    import inspect

    from .data.demo import build_demo_dataset
    from .presets import DEMO_DATA

    defaults = {k: v.default for k, v in
                inspect.signature(build_demo_dataset).parameters.items()
                if v.default is not inspect.Parameter.empty}
    parser = ArgumentParser(
        prog=_prog("make-demo-data"), allow_abbrev=False,
        description="Build the built-in multi-label dataset from real Fashion-MNIST photos (a "
                    "COCO-format dataset: train with --dataset coco OUT_DIR). Defaults: the "
                    "COCO-like setting (small items); --preset: the CPU demo preset.")
    parser.add_argument("out_dir")
    parser.add_argument("--preset", action="store_true",
                        help=f"the CPU demo preset's parameters {DEMO_DATA}")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--source-dir", default=defaults["source_dir"],
                        help="directory with the four Fashion-MNIST idx files")
    for key in ("n_train", "n_val", "n_test", "canvas_size", "min_items", "max_items"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                            help=f"default {defaults[key]}")
    parser.add_argument("--item-scale", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help=f"item side as a fraction of the canvas (default "
                             f"{defaults['item_scale']})")
    parser.add_argument("--no-backgrounds", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    ns = parser.parse_args(list(argv))
    setup_logging()
    params = {k: v for k, v in defaults.items() if k not in ("overwrite",)}
    if ns.preset:
        params.update(DEMO_DATA)
    for key in ("seed", "n_train", "n_val", "n_test", "canvas_size", "min_items", "max_items",
                "item_scale"):
        if getattr(ns, key) is not None:
            params[key] = tuple(ns.item_scale) if key == "item_scale" else getattr(ns, key)
    params.update(source_dir=ns.source_dir, backgrounds=not ns.no_backgrounds)
    manifest = build_demo_dataset(ns.out_dir, overwrite=ns.overwrite, **params)
    sizes = {k: v["images"] for k, v in manifest["splits"].items()}
    print(f"demo dataset written to {os.path.abspath(ns.out_dir)} ({sizes} images); train on "
          f"it with --dataset coco {ns.out_dir}")
    return 0


def run_demo_train(argv: Sequence[str]) -> int:
    """The CPU demo preset: build the preset dataset if missing, then one PU-MLC run."""
    from .presets import demo_train_argv, ensure_demo_data

    from .config import parse_train_args

    parser = ArgumentParser(
        prog=_prog("demo-train"), allow_abbrev=False, description=run_demo_train.__doc__ +
        " Any training flag after the options overrides the preset (e.g. --prob=1 --loss=bce).")
    parser.add_argument("--data", default="demo_data")
    ns, extra = parser.parse_known_args(list(argv))
    setup_logging()
    argv = demo_train_argv(Path(ns.data).resolve(), extra)
    parse_train_args(argv, prog=_prog("demo-train"))   # every flag checked before the build
    ensure_demo_data(ns.data)
    return run_train(argv)


#: Longest ``error:`` line printed (a last guard: messages quote values shortly already).
MAX_ERROR_CHARS = 2000


def guarded(fn, argv: Sequence[str]) -> int:
    """Run a subcommand; print user-fixable errors as one line instead of a traceback."""
    try:
        return fn(argv)
    except PUMLCError as err:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        prefix = f"[rank {process_rank()}] " if world > 1 else ""
        print(f"{prefix}error: {error_line(err)}", file=sys.stderr)
        return 2


def error_line(err: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """``err``'s message as one line (also when it quotes a multi-line library error, torch.load
    ...) of at most about ``limit`` characters; only a bounded prefix of it is ever split."""
    text = str(err)
    total = len(text)
    line = " ".join(text[:2 * limit].split())
    if total > 2 * limit or len(line) > limit:
        line = f"{line[:limit]}... [message cut: {total:,} characters]"
    return line


USAGE = """usage: {prog} COMMAND [ARGS]   (COMMAND --help for its flags)

  train DATA_ROOT [flags]        train one model; the paper's flags, e.g. --dataset=COCO2014
                                 --b=35 --Stop_epoch=40 (the word 'train' may be left out;
                                 --config FILE replaces DATA_ROOT when FILE has 'data')
  evaluate CHECKPOINT DATA_ROOT  mAP, per-class AP, OF1/CF1 of a run's best.pt on a split
  predict CHECKPOINT IMAGE...    a CSV of label scores per image
  search --space FILE.yaml       Ray Tune + Optuna search (needs pu-mlc[search])
  export EXPERIMENT_DIR          best config and command per task of a search
  report EXPERIMENT_DIR          results table, published rows, figures of a search
  tensorboard EXPERIMENT_DIR     the TensorBoard command (an object store's runs copied here)
  demo                           build the built-in dataset and run the demo search
  make-demo-data OUT_DIR         build the built-in multi-label dataset of real photos
  demo-train                     the CPU demo preset: one run on the built-in dataset

A first word that names a command is that command, with one exception: when it is also a
folder in the working directory and only training flags follow it (e.g. 'demo --dataset coco
--b 4'), the folder is the DATA_ROOT of a training run, as in the published command lines. No
command's own line looks like that. 'train' and 'demo-train' are always the commands. Write
'train NAME' or './NAME' to name such a folder outright.
"""

SEARCH_COMMANDS = ("search", "export", "report", "demo", "tensorboard")


def _run_evaluate(argv: Sequence[str]) -> int:
    from .inference_cli import run_evaluate

    return run_evaluate(argv)


def _run_predict(argv: Sequence[str]) -> int:
    from .inference_cli import run_predict

    return run_predict(argv)


def _prog(command: Optional[str] = None) -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = "train_entry.py" if name == "train_entry.py" else "pu-mlc"
    return f"{prog} {command}" if command else prog


#: The group under which an installed package adds commands to ``pu-mlc``: the search package
#: (``tune``, extra ``search``) registers search/export/report/demo there (``pyproject.toml``).
#: The library never imports the search: it finds the commands by name, at run time.
COMMAND_GROUP = "pu_mlc.commands"


def registered_commands() -> dict[str, Callable[[Sequence[str]], int]]:
    """Commands other packages registered for ``pu-mlc`` (entry points of
    :data:`COMMAND_GROUP`), loaded when called."""
    from importlib.metadata import entry_points

    return {ep.name: (lambda argv, _ep=ep: _ep.load()(argv))
            for ep in entry_points(group=COMMAND_GROUP)}


def run_search_side(argv: Sequence[str],
                    commands: Optional[Mapping[str, Callable[[Sequence[str]], int]]] = None
                    ) -> int:
    """``search``/``export``/``report``/``demo``: commands of the search package, found in
    ``commands`` (given by an entry point above both packages, ``train_entry.py``) or among
    the registered ones; Ray is imported only now."""
    import importlib.util

    commands = dict(commands) if commands is not None else registered_commands()
    missing = [m for m in ("ray", "optuna") if importlib.util.find_spec(m) is None]
    if missing or argv[0] not in commands:
        print(f"error: '{argv[0]}' needs the search extra (not installed: "
              f"{', '.join(missing) or 'the pu_mlc.commands of the tune package'}); install "
              f"it with pip install 'pu-mlc[search]'", file=sys.stderr)
        return 2
    return guarded(commands[argv[0]], argv[1:])


def main(argv: Optional[Sequence[str]] = None,
         search_commands: Optional[Mapping[str, Callable[[Sequence[str]], int]]] = None) -> int:
    """The ``pu-mlc`` command line. ``search_commands``: the search package's commands, when
    the caller has them at hand (otherwise they are found by :func:`registered_commands`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(prog=_prog()))
        return 0 if argv else 2
    commands = {"train": run_train, "make-demo-data": run_make_demo_data,
                "demo-train": run_demo_train, "evaluate": _run_evaluate, "predict": _run_predict}
    if _is_a_data_root(argv, [*commands, *SEARCH_COMMANDS]):
        print(f"{_prog()}: training on the folder ./{argv[0]} (the '{argv[0]}' command takes "
              f"none of these flags; write 'train {argv[0]}' to say so)", file=sys.stderr)
        return guarded(run_train, argv)
    if argv[0] in SEARCH_COMMANDS:
        return run_search_side(argv, search_commands)
    if argv[0] in commands:
        return guarded(commands[argv[0]], argv[1:])
    typo = _command_typo(argv[0], [*commands, *SEARCH_COMMANDS])
    if typo:
        print(f"error: unknown command {argv[0]!r}; did you mean {typo}? ({_prog()} --help "
              f"lists the commands)", file=sys.stderr)
        return 2
    return guarded(run_train, argv)


#: Commands whose word is never read as a folder: their lines are training flags themselves.
_ALWAYS_COMMANDS = ("train", "demo-train")


class _NotTraining(Exception):
    """The probe parser of :func:`_is_a_data_root` refused a value."""


def _is_a_data_root(argv: Sequence[str], commands: Sequence[str]) -> bool:
    """The dispatch rule of USAGE: ``argv[0]`` names a command (not train or demo-train) and a
    folder in the working directory, and ``argv[1:]`` is flags of ``train`` only (no positional
    argument, no --help), so the line is DATA_ROOT + training flags. No valid line of those
    commands is one: each takes a positional argument or a flag ``train`` does not have."""
    word, rest = argv[0], list(argv[1:])
    if (word in _ALWAYS_COMMANDS or word not in commands or not rest
            or not os.path.isdir(word) or any(a in ("-h", "--help") for a in rest)):
        return False
    from .config import train_parser

    parser = train_parser()
    flags = {opt for action in parser._actions for opt in action.option_strings}
    names = {a.split("=", 1)[0] for a in rest if a.startswith("--")}
    if not names or not names <= flags:
        return False

    def refuse(message: str):
        raise _NotTraining(message)

    parser.error = refuse                         # a probe: print nothing, exit nowhere
    try:
        _, extra = parser.parse_known_args([word, *rest])
    except _NotTraining:                          # a bad value of a training flag: train says so
        return True
    return not extra


def _command_typo(word: str, commands: Sequence[str]) -> Optional[str]:
    """The command ``word`` misspells, if it is no flag, no existing path and close to one
    (the published command lines start with DATA_ROOT, so any other first word is a root)."""
    import difflib

    if word.startswith("-") or os.path.exists(word):
        return None
    close = difflib.get_close_matches(word, commands, n=1, cutoff=0.75)
    return close[0] if close else None
