"""Reading a search space file: the file itself, then the ``--set`` overrides, then the schema.

``load_search_spec(path, overrides)`` is what ``pu-mlc search`` and ``pu-mlc demo`` call: the
file is read with the size and alias limits of every YAML input (``pu_mlc.config.read_yaml_file``),
each ``--set KEY.SUB=VALUE`` is applied along a path the schema allows
(:func:`apply_override`: an index within a list, a known key of a fixed-shape mapping, no step
into a scalar), and :func:`tune.space.parse_search_spec` validates the result.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from pu_mlc.config import load_yaml_text, read_yaml_file
from pu_mlc.errors import ConfigError, shown

from .space import TOP_KEYS, SearchSpec, allowed_keys, parse_search_spec


def load_search_spec(path: str | Path, overrides: Optional[Mapping[str, Any]] = None,
                     base_dir: Optional[Path] = None) -> SearchSpec:
    """Read, merge ``--set key.sub=value`` overrides into, and validate a search space file."""
    path = Path(path)
    raw = read_yaml_file(path, flag="--space", example="search_spaces/demo.yaml",
                         kind="search space file", hint=" (see search_spaces/ for examples)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a search space is a mapping with keys {sorted(TOP_KEYS)}, "
                          f"not {shown(raw)}")
    for dotted, value in (overrides or {}).items():
        apply_override(raw, dotted, value, str(path))
    return parse_search_spec(raw, source=str(path), base_dir=base_dir or Path.cwd())


def apply_override(raw: dict, dotted: str, value: Any, where: str) -> None:
    """Apply an override like ``fixed.crop_size=64`` or ``tasks.0.prob=0.5``.

    The path must exist in the space's schema: a list index within the list, a known key of a
    fixed-shape mapping, no step into a scalar. Missing mappings on the way are created.
    """
    def refuse(why: str) -> None:
        raise ConfigError(f"--set {dotted}={_show(value)}: {why} ({where})")

    parts = dotted.split(".")
    if not dotted or any(not p.strip() for p in parts):
        refuse("empty key in the path; write KEY.SUB=VALUE, e.g. --set fixed.lr=0.001")
    node: Any = raw
    walked: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        here = ".".join(walked) or "the top level"
        if isinstance(node, list):
            if not re.fullmatch(r"\d+", part):
                refuse(f"{here} is a list: '{part}' must be an index 0..{len(node) - 1}")
            index = int(part)
            if index >= len(node):
                refuse(f"{here} has {len(node)} entr{'y' if len(node) == 1 else 'ies'}: "
                       f"index {index} is out of range (0..{len(node) - 1})")
            if last:
                node[index] = value
                return
            node = node[index]
        elif isinstance(node, dict):
            allowed = allowed_keys([walked[0], "N"] + walked[2:]
                                    if walked[:1] in (["tasks"], ["methods"]) else walked)
            if allowed is not None and part not in allowed:
                refuse(f"unknown key '{part}' under {here}; allowed: {sorted(allowed)}")
            if last:
                node[part] = value
                return
            if node.get(part) is None:
                node[part] = [] if (not walked and part in ("tasks", "methods")) else {}
            node = node[part]
        else:
            refuse(f"{here} is a {type(node).__name__} ({shown(node)}), it has no key "
                   f"'{part}'")
        walked.append(part)


def _show(value: Any) -> str:
    """A ``--set`` value as it was written (YAML), or a short prefix of a large one."""
    if isinstance(value, (str, int, float, bool)) and len(str(value)) <= 60 or value is None:
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...") \
            .strip()
    return shown(value)


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` with the value parsed as YAML (numbers, booleans, lists), within the
    bounds of every YAML input (no alias expansion past the limit)."""
    if "=" not in text:
        raise ConfigError(f"--set {shown(text)}: expected KEY=VALUE, e.g. --set budget."
                          f"trials_per_task=5")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {shown(text)}: the key before '=' is empty; expected "
                          f"KEY=VALUE, e.g. --set budget.trials_per_task=5")
    try:
        return key, load_yaml_text(value, f"--set {shown(text)}: the value")
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {shown(text)}: the value is not valid YAML "
                          f"({shown(' '.join(str(err).split()), 400)}); quote it, e.g. --set "
                          f"{shown(key)}='\"...\"'") from None
