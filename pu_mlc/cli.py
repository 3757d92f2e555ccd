"""Command line of the library: ``train`` (one run, the paper's flags) and ``make-demo-data``.

``train_entry.py`` dispatches here; the Ray subcommands (``search``, ``export``) live in
``tune.cli`` so a single training run never imports Ray.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from .config import TrainConfig
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


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_entry.py [train]",
        description="Train one PU-MLC model. Accepts the published command line unchanged, e.g. "
                    "python -m torch.distributed.launch --nproc_per_node=2 --use_env "
                    "train_entry.py /data/coco --dataset=COCO2014 --b=35 ...")
    TrainConfig.add_arguments(parser)
    # torch.distributed.launch without --use_env appends --local_rank/--local-rank: accept it.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None,
                        help="YAML file of config fields (e.g. an exported best config); flags "
                             "given on the command line override it")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def config_from_args(argv: Sequence[str]) -> tuple[TrainConfig, argparse.Namespace]:
    parser = train_parser()
    ns = parser.parse_args(list(argv))
    if ns.local_rank is not None and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(ns.local_rank)
    base = TrainConfig.from_yaml(ns.config).to_dict(include_run_control=True) if ns.config \
        else {}
    given = {k: v for k, v in vars(ns).items() if k in TrainConfig.__dataclass_fields__}
    return TrainConfig.from_dict({**base, **given}, source="command line").normalized(), ns


def run_train(argv: Sequence[str]) -> int:
    cfg, ns = config_from_args(argv)
    setup_logging(ns.verbose)
    from .engine import fit

    result = fit(cfg)
    if process_rank() == 0:
        r = result["result"]
        if r["test_mAP"] is not None:
            print(f"test mAP {r['test_mAP']:.2f} ({cfg.protocol} protocol; selected "
                  f"{r['selected_model']} model at epoch {r['selected_epoch'] - 1}); "
                  f"results in {os.path.abspath(cfg.output_dir)}")
    return 0


def run_make_demo_data(argv: Sequence[str]) -> int:
    import inspect

    from .data.demo import build_demo_dataset
    from .presets import DEMO_DATA

    defaults = {k: v.default for k, v in
                inspect.signature(build_demo_dataset).parameters.items()
                if v.default is not inspect.Parameter.empty}
    parser = argparse.ArgumentParser(
        prog="train_entry.py make-demo-data",
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

    parser = argparse.ArgumentParser(
        prog="train_entry.py demo-train", description=run_demo_train.__doc__ +
        " Any training flag after the options overrides the preset (e.g. --prob=1 --loss=bce).")
    parser.add_argument("--data", default="demo_data")
    ns, extra = parser.parse_known_args(list(argv))
    setup_logging()
    data = ensure_demo_data(ns.data)
    if not any(a.startswith(("--output-dir", "-o")) for a in extra):
        extra = [*extra, "--output-dir=runs/demo-train"]
    return run_train(demo_train_argv(data, extra))


def guarded(fn, argv: Sequence[str]) -> int:
    """Run a subcommand; print user-fixable errors as one line instead of a traceback."""
    try:
        return fn(argv)
    except PUMLCError as err:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        prefix = f"[rank {process_rank()}] " if world > 1 else ""
        # one line, even when the message quotes a multi-line library error (torch.load ...)
        print(f"{prefix}error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": run_train, "make-demo-data": run_make_demo_data,
                "demo-train": run_demo_train}
    if argv and argv[0] in commands:
        return guarded(commands[argv[0]], argv[1:])
    return guarded(run_train, argv)
