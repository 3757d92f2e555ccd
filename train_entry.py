#!/usr/bin/env python
"""pu-mlc entry point for the paper's command lines (``train.py`` -> ``train_entry.py``).

    python train_entry.py [train] DATA_ROOT --dataset=COCO2014 ...   one run (the paper's flags)
    python train_entry.py search --space search_spaces/demo.yaml     Ray Tune + Optuna search
    python train_entry.py --help                                      every subcommand

The same command is installed as ``pu-mlc`` (and ``python -m pu_mlc``). Works as a plain script,
under ``torchrun`` / ``python -m torch.distributed.launch --use_env``, and as a
``ray job submit`` entrypoint.
"""

import sys

from pu_mlc.cli import main


def search_commands():
    """The search package's commands, when it is importable (the ``search`` extra): this
    script sits above both packages, so it hands them to the library's command line itself,
    also from a checkout that was never pip-installed."""
    try:
        from tune.cli import COMMANDS
    except ImportError:           # no search extra: pu-mlc says what to install
        return None
    return COMMANDS


if __name__ == "__main__":
    sys.exit(main(search_commands=search_commands()))
