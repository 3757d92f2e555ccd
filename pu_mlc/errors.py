"""Errors that reach the user.

Every problem a user can fix (a bad flag, a missing file, a malformed annotation) is raised as a
:class:`PUMLCError` subclass *before* expensive work starts. The message names what was wrong,
where (file, field or flag, value) and what to do, so the entry point can print it without a
traceback.
"""


class PUMLCError(ValueError):
    """Base class: a user-fixable problem, printed without a traceback by ``train_entry.py``."""


class ConfigError(PUMLCError):
    """A configuration field (flag or YAML key) has a value we refuse."""


class DataError(PUMLCError):
    """A dataset file (annotation, image, word vectors) is missing or malformed."""


class OutputDirError(PUMLCError):
    """The output directory holds earlier results that a run would overwrite."""


class DiskFullError(PUMLCError):
    """A file could not be written because its disk is full; the earlier file of that name (a
    checkpoint, metrics.json) is untouched, since every write goes to a temporary file first."""


class TrainingDiverged(PUMLCError):
    """Training stopped because the loss or the gradients diverged (see ``pu_mlc.engine.step``).

    ``reason`` says what was seen (one line), ``epoch`` (1-based) and ``step`` (1-based, within
    the epoch) where it was seen; the run's ``metrics.json`` records the same as its ``failure``.
    """

    def __init__(self, reason: str, epoch: int, step: int):
        self.reason, self.epoch, self.step = str(reason), int(epoch), int(step)
        super().__init__(f"training diverged at epoch {self.epoch} step {self.step}: "
                         f"{self.reason}; lower --lr (or use --precision fp32/bf16) and start a "
                         f"new run")

    def __reduce__(self):              # picklable with its fields (Ray sends errors by pickle)
        return type(self), (self.reason, self.epoch, self.step)


# ------------------------------------------------------------------------------------------------
# Showing a user's value in a message. A value from a YAML file or a command line can be huge (a
# megabyte string, a list of a million items, an alias bomb's shared lists): messages quote at
# most a short prefix of it, and never build its full repr on the way.

#: Characters of a value a message quotes (then "..." and what the value is).
SHOWN_CHARS = 60
#: Items of a list a message names (then "and N more").
LISTED_ITEMS = 5


def described(value) -> str:
    """What ``value`` is, in a few words and without its content: ``'a list of 3 items'``,
    ``'a mapping of 2 keys'``, ``'a str of 12 characters'``, ``'an int'``."""
    def plural(n: int, word: str) -> str:
        return f"{n:,} {word}{'' if n == 1 else 's'}"

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, str):
        return f"a str of {plural(len(value), 'character')}"
    if isinstance(value, (bytes, bytearray)):
        return f"{plural(len(value), 'byte')} of binary data"
    if isinstance(value, dict):
        return f"a mapping of {plural(len(value), 'key')}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"a {type(value).__name__} of {plural(len(value), 'item')}"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def shown(value, limit: int = SHOWN_CHARS) -> str:
    """``value`` for a message: its repr when that is short, else a prefix of at most about
    ``limit`` characters and what the value is, e.g. ``"'abcabc...' (a str of 1,000,000
    characters)"`` or ``"[1, 2, 3, ... (a list of 5,000 items)"``. Containers are walked lazily
    (only the items that fit are looked at), so a huge or deeply shared value costs nothing."""
    text, complete = _prefix(value, max(int(limit), 8), depth=0)
    return text if complete else f"{text} ({described(value)})"


def listed(items, limit: int = LISTED_ITEMS, chars: int = 40) -> str:
    """The first ``limit`` of ``items`` as a list (each :func:`shown`), then how many more:
    ``"['a', 'b', 'c'] and 1,204 more"``."""
    items = list(items)
    head = "[" + ", ".join(shown(item, chars) for item in items[:limit]) + "]"
    rest = len(items) - limit
    return head + (f" and {rest:,} more" if rest > 0 else "")


def _prefix(value, limit: int, depth: int) -> tuple[str, bool]:
    """(text of at most about ``limit`` characters, whether it is the whole repr)."""
    if isinstance(value, (str, bytes, bytearray)):
        if len(value) <= limit:
            return repr(value), True
        head = repr(value[:limit])
        return head[:-1] + "..." + head[-1], False
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value), True
    if isinstance(value, int):
        if value.bit_length() > 3 * limit:         # repr would be long (or refused over 4300)
            return f"an int of about {int(value.bit_length() * 0.30103):,} digits", True
        text = repr(value)
        return (text, True) if len(text) <= limit else (text[:limit] + "...", False)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        if depth > 10:
            return "...", False
        is_map = isinstance(value, dict)
        open_, close = ("{", "}") if is_map or isinstance(value, (set, frozenset)) else (
            ("(", ")") if isinstance(value, tuple) else ("[", "]"))
        parts, used, complete, cut_inside = [], 1, True, False
        for item in (value.items() if is_map else value):
            room = limit - used
            if room < 4:
                complete = False
                break
            if is_map:
                k, ok_k = _prefix(item[0], room, depth + 1)
                v, ok_v = _prefix(item[1], max(room - len(k) - 2, 4), depth + 1)
                part, ok = f"{k}: {v}", ok_k and ok_v
            else:
                part, ok = _prefix(item, room, depth + 1)
            parts.append(part)
            used += len(part) + 2
            if not ok or used > limit:
                complete, cut_inside = False, not ok
                break
        if complete:
            if isinstance(value, tuple) and len(value) == 1:
                return f"({parts[0]},)", True
            if not parts and isinstance(value, (set, frozenset)):
                return f"{type(value).__name__}()", True
            return open_ + ", ".join(parts) + close, True
        # an item cut short already ends with "..."; else the items that did not fit are "..."
        return open_ + ", ".join(parts if cut_inside else parts + ["..."]), False
    name = type(value).__name__
    try:
        text = repr(value)
    except Exception:                               # a broken __repr__: say what it is
        return f"a {name}", False
    return (text, True) if len(text) <= limit else (text[:limit] + "...", False)
