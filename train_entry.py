#!/usr/bin/env python
"""pu-mlc entry point.

    python train_entry.py [train] DATA_ROOT --dataset=COCO2014 ...   one run (the paper's flags)
    python train_entry.py search --space search_spaces/demo.yaml     Ray Tune + Optuna search
    python train_entry.py export EXPERIMENT_DIR                       best config per task
    python train_entry.py make-demo-data OUT_DIR [--preset]           built-in real dataset
    python train_entry.py demo-train                                  CPU demo preset: one run
    python train_entry.py demo                                        build data + demo search

Works as a plain script, under ``torchrun`` / ``python -m torch.distributed.launch --use_env``,
and as a ``ray job submit`` entrypoint.
"""

import sys

RAY_COMMANDS = ("search", "export", "demo")


def main() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] in RAY_COMMANDS:
        from tune.cli import main as tune_main

        return tune_main(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        if not argv:
            return 2
        return 0
    from pu_mlc.cli import main as lib_main

    return lib_main(argv)


if __name__ == "__main__":
    sys.exit(main())
