"""The argument parser every ``pu-mlc`` command uses (train, evaluate, predict, search ...).

argparse answers a bad flag with the command's whole usage (35 lines for ``train``) and then the
``error:`` line. Ours prints the ``error:`` line alone, with a pointer to ``--help`` in it, and
exits with argparse's code 2::

    pu-mlc train: error: unrecognized arguments: --batch=8 (see pu-mlc train --help)

``--help`` itself is unchanged. Imports nothing of the project, so any module may use it.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

#: Characters of argparse's own message kept in the one line (it quotes the user's words).
_MAX_MESSAGE = 1000


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line: ``PROG: error: MESSAGE (see
    PROG --help)``. Abbreviated flags are refused unless ``allow_abbrev=True`` is asked for."""

    def __init__(self, *args, allow_abbrev: bool = False, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def error(self, message: str) -> NoReturn:
        text = " ".join(str(message).split())
        if len(text) > _MAX_MESSAGE:
            text = text[:_MAX_MESSAGE] + "..."
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")
