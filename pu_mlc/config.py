"""One training configuration, from command line to YAML to Ray trial to exported file.

``TrainConfig`` is the contract of the whole project. The published command line of the paper
(``--Stop_epoch``, ``--b``, ``--pretrainedModel`` ...) parses into it, a YAML search space
produces one per trial, Ray pickles it to the trial's workers as it is, the engine runs it, and a
finished run writes it as ``config.yaml`` and as the exact command that reproduces it. Every
field is declared once, below, with the flag that sets it, so a field that exists in one of these
places exists in all of them (``tests/test_config.py`` checks the round trips).

A ``TrainConfig`` is frozen and checked when it is made: every value is validated once, here,
with a message naming the YAML key and the flag, and no later layer checks it again. Choice lists
live in ``pu_mlc.choices`` (which imports nothing), so importing this module, as every process
that unpickles a ``TrainConfig`` does, never imports torch.

Epochs are counted one way: ``train_epochs`` epochs numbered 1..train_epochs in logs, TensorBoard,
ASHA, ``metrics.json`` and checkpoints. The published ``--Stop_epoch N`` (epochs 0..N run) keeps
its meaning at the flag and is converted once, there: ``train_epochs = N + 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from .choices import (DATA_PIPELINES, DATASETS, DEVICES, F1_MODES, HEADS, LGC_IMPLS, PRECISIONS,
                      PROTOCOLS)
from .choices import LOSS_NAMES as LOSSES
from .argparse_tools import ArgumentParser
from .errors import ConfigError, PUMLCError, described, listed, shown

#: Named bundles of field values; ``--preset NAME`` applies one below the explicit flags.
PRESETS: dict[str, dict[str, Any]] = {
    # The official run exactly: fp16 autocast + GradScaler, decoding and augmentation with PIL in
    # the loader processes, best epoch picked on the test set, OF1/CF1 as the official code
    # reports them (each the best over thresholds 0.01..0.99 on the test labels).
    "paper": {"precision": "fp16", "data_pipeline": "pil", "protocol": "paper",
              "f1_thresholds": "sweep"},
}


def _opt(default: Any, *flags: str, help: str, choices: Optional[Sequence[str]] = None,
         published: bool = False, run_control: bool = False, metavar: Optional[str] = None,
         more_flags: Sequence[str] = ()):
    """Declare a config field together with its command-line flags.

    ``published`` marks flags of the paper's ``train.py`` (kept spelled as published);
    ``run_control`` marks fields that steer *this run* (overwrite, resume) and are not part of
    the experiment, so they are left out of exported configs and commands; ``more_flags`` are
    further spellings of ours for the same field.
    """
    return field(default=default, metadata={
        "flags": flags, "help": help, "choices": choices, "published": published,
        "run_control": run_control, "metavar": metavar, "more_flags": tuple(more_flags)})


@dataclass(frozen=True)
class TrainConfig:
    """Every field of one PU-MLC training run (defaults: the paper's COCO setting, full labels)."""

    # --- data --------------------------------------------------------------------------------
    data: str = _opt("", help="dataset root directory (positional in the published command)")
    dataset: str = _opt("COCO2014", "--dataset", choices=DATASETS, published=True,
                        help="COCO2014 (train2014/val2014 layout), VOC2007 (VOCdevkit layout) or "
                             "coco (any COCO-format dataset: annotations/instances_{train,test}"
                             ".json with image folders train/ and test/)")
    num_classes: Optional[int] = _opt(None, "--num-classes", published=True,
                                      help="number of classes; checked against the dataset "
                                           "(default: taken from the dataset)")
    prob: float = _opt(1.0, "--prob", published=True,
                       help="fraction of training label entries kept (mask drawn with "
                            "--mask-seed, published: 0); 1 = full-label MLC, < 1 = MLC with "
                            "partial labels")
    scale_size: int = _opt(512, "--scaleSize", published=True,
                           help="training images are first resized to scaleSize x scaleSize")
    crop_size: int = _opt(448, "--cropSize", published=True,
                          help="network input size (train crop is resized to it; test resize)")
    workers: int = _opt(8, "--workers", "-j", published=True,
                        help="data loader processes per training process")
    skip_bad_images: bool = _opt(False, "--skip-bad-images",
                                 help="drop (and count) unreadable images instead of stopping")
    data_pipeline: str = _opt("auto", "--data-pipeline", choices=DATA_PIPELINES,
                              help="pil: decode+augment in loader processes (published); tensor: "
                                   "decode+augment on the training device; auto: tensor on CUDA. "
                                   "A run records the one it used")
    # --- model -------------------------------------------------------------------------------
    model_name: str = _opt("resnet101", "--model-name", "--backbone", published=True,
                           help="backbone: resnet101/resnet50 (torchvision layout) or any timm "
                                "model name, e.g. tf_efficientnet_lite0")
    pretrained_model: Optional[str] = _opt(
        None, "--pretrainedModel", published=True,
        help="backbone weights: a torchvision-keyed state-dict file, 'builtin' for packaged "
             "weights (tf_efficientnet_lite0), or None")
    head: str = _opt("ssgrl", "--head", choices=HEADS,
                     help="ssgrl: semantic attention + gated GNN head (published); linear: "
                          "global average pool + linear")
    head_dim: int = _opt(1024, "--head-dim",
                         help="width of the ssgrl head: image features and GNN nodes (attention "
                              "uses half). 1024 as published; smaller is much cheaper on CPU")
    word_vectors: str = _opt("auto", "--word-vectors",
                             help="class word vectors of the ssgrl head: 'auto' (the paper's "
                                  "300-d GloVe vectors for COCO2014/VOC2007, shipped; GloVe "
                                  "6B-50d averages of the class names otherwise), 'published', "
                                  "'glove', or a .npy file of shape C x d")
    lgc: bool = _opt(True, "--lgc", help="add the local-global branch to every 3x3 conv")
    lgc_impl: str = _opt("fast", "--lgc-impl", choices=LGC_IMPLS,
                         help="fast: algebraically rewritten branch (same function); literal: "
                              "as published")
    top_k: int = _opt(1, "--topK", published=True,
                      help="accepted for compatibility with the published command; no effect")
    # --- loss --------------------------------------------------------------------------------
    loss: str = _opt("pu", "--loss", choices=LOSSES,
                     help="pu (PU loss + MixUp regulariser), bce (full labels only), partial_bce "
                          "(ignores unknown entries), assume_negative_bce, asl")
    alpha: float = _opt(1.0, "--alpha", published=True,
                        help="PU loss temperature scale: T_c = min(alpha * std_c(z), 1)")
    gamma: float = _opt(0.55, "--gamma", published=True,
                        help="PU loss re-balance exponent: w_c = mean(s_c) ** gamma")
    mixup_alpha: float = _opt(0.3, "--mixup-alpha",
                              help="Beta(a, a) parameter of the PU MixUp regulariser")
    asl_gamma_neg: float = _opt(4.0, "--asl-gamma-neg",
                                help="ASL focusing exponent of negatives (used by --loss asl "
                                     "only; ASL paper: 4)")
    asl_gamma_pos: float = _opt(1.0, "--asl-gamma-pos",
                                help="ASL focusing exponent of positives (used by --loss asl "
                                     "only; ASL paper: 1, ASL's training script: 0)")
    asl_clip: float = _opt(0.05, "--asl-clip",
                           help="ASL probability margin shifted off negatives, in [0, 1); 0 "
                                "disables it (used by --loss asl only; ASL paper: 0.05)")
    # --- optimisation ------------------------------------------------------------------------
    batch_size: int = _opt(35, "--b", "--batch-size", published=True,
                           help="images per training process (the PU statistics are per process)")
    lr: float = _opt(1e-4, "--lr", published=True, help="OneCycle maximum learning rate")
    weight_decay: float = _opt(1e-4, "--weight-decay", help="Adam weight decay")
    ema: float = _opt(0.9997, "--ema", published=True, help="EMA decay, applied every step")
    epochs: int = _opt(80, "--epochs", help="OneCycle schedule length in epochs")
    train_epochs: int = _opt(41, "--Stop_epoch", published=True, more_flags=("--train-epochs",),
                             help="epochs trained, numbered 1..train_epochs; cuts the OneCycle "
                                  "schedule. Published --Stop_epoch N = epochs 0..N = "
                                  "train_epochs N+1 (--train-epochs sets the count directly)")
    pct_start: float = _opt(0.2, "--pct-start", help="OneCycle warm-up fraction")
    seed: int = _opt(0, "--seed", help="seed of training randomness (not of the label mask: "
                                       "see --mask-seed)")
    mask_seed: int = _opt(0, "--mask-seed",
                          help="seed of the partial-label mask drawn with --prob < 1; 0 is the "
                               "published seed-0 mask. The honest protocol's validation "
                               "hold-out does not depend on it")
    # --- execution ---------------------------------------------------------------------------
    precision: str = _opt("auto", "--precision", choices=PRECISIONS,
                          help="autocast dtype: auto = bf16 on CUDA when supported, else fp32 "
                               "on CPU; fp16 uses a GradScaler as published. A run records the "
                               "one it used")
    device: str = _opt("auto", "--device", choices=DEVICES, help="training device")
    channels_last: bool = _opt(True, "--channels-last",
                               help="channels_last memory format on CUDA (ignored on CPU)")
    compile: bool = _opt(False, "--compile", help="torch.compile the model (slow first epoch)")
    eval_batch_size: Optional[int] = _opt(None, "--eval-batch-size",
                                          help="images per process at evaluation "
                                               "(default: 2 x --b)")
    # --- protocol and outputs ----------------------------------------------------------------
    protocol: str = _opt("paper", "--protocol", choices=PROTOCOLS,
                         help="paper: best epoch chosen on the test set, as published "
                              "(optimistic); honest: chosen on a validation split, test mAP of "
                              "that epoch reported")
    f1_thresholds: str = _opt("fixed", "--f1-thresholds", choices=F1_MODES,
                              help="OF1/CF1 shown per epoch: fixed = at score 0.5; sweep = each "
                                   "the best over thresholds 0.01..0.99 on the evaluated labels, "
                                   "as the official code reports them (optimistic)")
    val_fraction: float = _opt(0.1, "--val-fraction",
                               help="honest protocol: fraction of training images held out for "
                                    "validation when the dataset has no val split")
    output_dir: Optional[str] = _opt(None, "--output-dir", "-o",
                                     help="where checkpoints, metrics.json and TensorBoard files "
                                          "go (default: a new folder runs/train/DATE-TIME-"
                                          "DATASET-MODEL per run)")
    tensorboard_dir: Optional[str] = _opt(None, "--tensorboard-dir",
                                          help="TensorBoard run directory (default: "
                                               "OUTPUT_DIR/tensorboard)")
    overwrite: bool = _opt(False, "--overwrite", run_control=True,
                           help="allow replacing results already in the output dir")
    resume: bool = _opt(False, "--resume", run_control=True,
                        help="continue from OUTPUT_DIR/checkpoints/last.pt")

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        for name, value in _normalized(self).items():
            object.__setattr__(self, name, value)
        _validate(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied; the copy is validated like any new config."""
        return dataclasses.replace(self, **changes)

    def updated(self, values: Mapping[str, Any], *, source: str,
                **changes: Any) -> "TrainConfig":
        """A copy with ``values`` from outside (a YAML file, a sampler) and ``changes`` (the
        caller's own, already typed: e.g. a trial's folders) applied in one step: unknown keys
        refused, each outside value converted to its field's type once, the copy validated
        once, ``source`` named in any error. A search trial's sampled values reach the engine
        this way (``tune.trial.trial_config``)."""
        known = fields_by_name()
        unknown = sorted(set(values) - set(known), key=str)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {listed(unknown)}; allowed fields "
                              f"are {sorted(known)}")
        coerced = {name: _coerce(known[name], value, source) for name, value in values.items()}
        return dataclasses.replace(self, **coerced, **changes)

    def resolved(self, **concrete: Any) -> "TrainConfig":
        """A copy with ``auto`` fields made concrete by the engine for this machine (precision,
        data pipeline, output folder). The values come from the engine's own resolution, which
        returns members of the choice lists only, so the copy is not validated again."""
        allowed = {"precision", "data_pipeline", "output_dir"}
        if set(concrete) - allowed:
            raise TypeError(f"resolved() sets only {sorted(allowed)}, not "
                            f"{sorted(set(concrete) - allowed)}")
        for name in ("precision", "data_pipeline"):
            if name in concrete and concrete[name] not in fields_by_name()[name].metadata[
                    "choices"]:
                raise ValueError(f"{name} {concrete[name]!r} is not one of the choices")
        clone = object.__new__(TrainConfig)
        for f in fields(self):
            object.__setattr__(clone, f.name, concrete.get(f.name, getattr(self, f.name)))
        return clone

    # --- dict / YAML --------------------------------------------------------------------------
    def to_dict(self, include_run_control: bool = False) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if include_run_control or not f.metadata["run_control"]}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> "TrainConfig":
        """Build a config from a mapping, refusing unknown keys and wrongly typed values.

        ``stop_epoch`` (the published ``--Stop_epoch`` as a key, used by configs written before
        ``train_epochs`` existed) is read with its published meaning.
        """
        values = dict(values)
        if "stop_epoch" in values:
            if "train_epochs" in values:
                raise ConfigError(f"{source}: give either train_epochs or stop_epoch (= "
                                  f"train_epochs - 1, the published --Stop_epoch), not both")
            stop = _coerce(fields_by_name()["train_epochs"], values.pop("stop_epoch"),
                           source, "stop_epoch")
            values["train_epochs"] = stop + 1
        known = fields_by_name()
        unknown = sorted(set(values) - set(known), key=lambda k: (type(k).__name__, str(k)))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {listed(unknown)}; allowed fields "
                              f"are {sorted(known)}")
        return cls(**{name: _coerce(known[name], value, source) for name, value in values.items()})

    def to_yaml(self, path: Optional[str | Path] = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_yaml_fields(path), source=str(path))

    # --- command line -------------------------------------------------------------------------
    @classmethod
    def from_cli(cls, argv: Sequence[str]) -> "TrainConfig":
        """The config of a ``train`` command line (the same parser users run)."""
        return parse_train_args(argv)[0]

    def to_cli(self, program: str = "python train_entry.py",
               include_run_control: bool = False) -> str:
        """The exact command that reproduces this config: published flags first, then ours."""
        args = [shlex.quote(self.data)]
        ordered = sorted(fields(self), key=lambda f: not f.metadata["published"])
        for f in ordered:
            if f.name == "data":
                continue
            if f.metadata["run_control"] and not include_run_control:
                continue
            value = getattr(self, f.name)
            flag = f.metadata["flags"][0]
            if f.name == "train_epochs":
                value -= 1                                  # --Stop_epoch N trains N + 1 epochs
            if _is_bool(f):
                args.append(flag if value else "--no-" + flag[2:])
            elif value is None:
                if f.name == "pretrained_model":
                    args.append(f"{flag}=None")
                # other optional fields: absent means default (None)
            else:
                args.append(f"{flag}={shlex.quote(_format_value(value))}")
        return f"{program} " + " ".join(args)


# ------------------------------------------------------------------------------------------------
# The one command-line parser of a training run (train_entry.py, pu-mlc train, presets, tests).
def train_parser(prog: str = "pu-mlc train") -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Train one PU-MLC model. Accepts the published command line unchanged, e.g. "
                    "torchrun --nproc_per_node=2 train_entry.py /data/coco --dataset=COCO2014 "
                    "--b=35 ... Precedence: defaults < --config file < --preset < flags.")
    parser.add_argument("data", metavar="DATA_ROOT", nargs="?", default=argparse.SUPPRESS,
                        help=fields_by_name()["data"].metadata["help"] +
                        " (optional when the --config file has 'data')")
    published = parser.add_argument_group("published flags (the paper's train.py)")
    ours = parser.add_argument_group("pu-mlc flags")
    for f in fields(TrainConfig):
        if f.name == "data":
            continue
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                                  "help": meta["help"] + f" (default: {_shown_default(f)})"}
        if meta["choices"]:
            kwargs["choices"] = list(meta["choices"])
        if _is_bool(f):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _argparse_type(f)
        (published if meta["published"] else ours).add_argument(*meta["flags"], **kwargs)
        if meta["more_flags"]:
            ours.add_argument(*meta["more_flags"], dest=f.name, default=argparse.SUPPRESS,
                              type=_TYPES[str(f.type)], help=argparse.SUPPRESS)
    # torch.distributed.launch without --use_env appends --local_rank/--local-rank: accept it.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="YAML file of config fields (e.g. an exported best_config.yaml or a "
                             "run's config.yaml); flags given on the command line override it")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="paper: the official run exactly (fp16 + GradScaler, PIL pipeline, "
                             "test-set selection, OF1/CF1 best over thresholds)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def parse_train_args(argv: Sequence[str], prog: str = "pu-mlc train"
                     ) -> tuple[TrainConfig, argparse.Namespace]:
    """(config, namespace) of a ``train`` command line; user errors raise :class:`ConfigError`."""
    ns = train_parser(prog).parse_args(list(argv))
    if ns.local_rank is not None and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(ns.local_rank)
    given = {k: v for k, v in vars(ns).items() if k in fields_by_name()}
    base = read_yaml_fields(ns.config) if ns.config else {}
    if "stop_epoch" in base and "train_epochs" in given:
        base.pop("stop_epoch")                           # the flag overrides the file's value
    values = {**base, **(PRESETS[ns.preset] if ns.preset else {}), **given}
    if not values.get("data"):
        raise ConfigError("no dataset root: give DATA_ROOT, or a --config file with a 'data' "
                          "field")
    source = f"{ns.config} + command line" if ns.config else "command line"
    return TrainConfig.from_dict(values, source=source), ns


#: Largest YAML file ``--config`` and ``--space`` read (checked before reading): a run's config
#: is about 2 kB, the largest shipped search space 4 kB.
MAX_YAML_BYTES = 1024 * 1024
#: Most values (scalars, lists and mappings, each alias counted as the value it stands for) one
#: YAML document may hold: a config has about 45, a shipped search space about 150.
MAX_YAML_VALUES = 100_000
#: Deepest nesting of lists and mappings a YAML document may have (a search space has 5).
MAX_YAML_DEPTH = 100


def read_yaml_file(path: Path, *, flag: str, example: str, kind: str, hint: str = "") -> Any:
    """The content of a YAML file given with ``flag`` (``--config``, ``--space``), with one-line
    errors for a directory, a missing, unreadable or invalid file (``kind`` names the file in
    them: "config file", "search space file").

    Bounded before any work: a file over :data:`MAX_YAML_BYTES` is refused from its size (stat,
    then at most that many bytes read, for pipes and devices); the document is composed with at
    most :data:`MAX_YAML_VALUES` values and :data:`MAX_YAML_DEPTH` levels, and refused when its
    aliases (``*name``) expand past :data:`MAX_YAML_VALUES` values (an alias bomb: a few lines
    that stand for hundreds of millions of strings)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory; {flag} takes a YAML file such as "
                              f"{example}")
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(_too_large(path, kind, flag, f"{size:,} bytes"))
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:                     # a pipe or device: no size to stat
            raise ConfigError(_too_large(path, kind, flag, "over that (read from a pipe or "
                                                           "device)"))
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {kind}{hint}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: the {kind} cannot be read ({shown(str(err), 200)})") from None
    return load_yaml_text(text, f"{path}: the {kind}")


def load_yaml_text(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` within the bounds of :func:`read_yaml_file` (values, depth,
    alias expansion); ``where`` starts every :class:`ConfigError` (e.g. "FILE: the config
    file", "--set fixed.data"). For any YAML a user hands us: a file, a ``--set`` value."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node, where)
        if expanded > MAX_YAML_VALUES:
            raise ConfigError(f"{where} uses YAML aliases (*name) that expand to {expanded:,} "
                              f"values; at most {MAX_YAML_VALUES:,} are read: write the values "
                              f"out instead of repeating anchors")
        return loader.construct_document(node)
    except _TooBig as err:
        raise ConfigError(f"{where} {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML ({shown(' '.join(str(err).split()), 400)})"
                          ) from None
    except RecursionError:
        raise ConfigError(f"{where} nests lists or mappings too deeply (at most "
                          f"{MAX_YAML_DEPTH} levels are read)") from None
    finally:
        loader.dispose()


def _too_large(path: Path, kind: str, flag: str, size: str) -> str:
    return (f"{path}: {flag} reads YAML files of at most 1 MiB ({MAX_YAML_BYTES:,} bytes; a "
            f"{kind} is a few kB) and this {kind} is {size}; is it the right file?")


class _TooBig(ValueError):
    """A YAML document past :data:`MAX_YAML_VALUES` values or :data:`MAX_YAML_DEPTH` levels."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, composing at most :data:`MAX_YAML_VALUES` nodes (an alias reuses
    its anchor's node and costs nothing here; :func:`_expanded_size` counts what it stands for)
    nested at most :data:`MAX_YAML_DEPTH` deep."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.nodes = self.depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        self.nodes += 1
        if self.nodes > MAX_YAML_VALUES:
            raise _TooBig(f"holds more than {MAX_YAML_VALUES:,} values; at most that many are "
                          f"read (a config or search space holds a few hundred)")
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise _TooBig(f"nests lists or mappings more than {MAX_YAML_DEPTH} levels deep; "
                              f"at most {MAX_YAML_DEPTH} are read")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(root: yaml.Node, where: str) -> int:
    """How many values the document of ``root`` holds once every alias is replaced by the value
    it stands for: each distinct node is counted once and its count reused wherever an alias
    refers to it, so a billion-value bomb costs a few dozen steps. A value that contains itself
    (``&a [*a]``) is refused."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()                      # the nodes whose children are being counted
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_.discard(key)
            if isinstance(node, yaml.SequenceNode):
                sizes[key] = 1 + sum(sizes[id(c)] for c in node.value)
            elif isinstance(node, yaml.MappingNode):
                sizes[key] = 1 + sum(sizes[id(k)] + sizes[id(v)] for k, v in node.value)
            else:
                sizes[key] = 1
            continue
        if key in sizes:
            continue
        if key in open_:
            raise ConfigError(f"{where} has a YAML alias inside the value it names (a value "
                              f"that contains itself); write the values out")
        open_.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def read_yaml_fields(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file, with a clear error for anything else."""
    path = Path(path)
    values = read_yaml_file(path, flag="--config", example=str(path / "config.yaml"),
                            kind="config file")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got "
                          f"{type(values).__name__}")
    return values


def describe_field(name: str) -> str:
    """'prob (--prob)': the YAML key and the flag, so messages help CLI and YAML users alike."""
    f = fields_by_name().get(name)
    if f is None or not f.metadata.get("flags"):
        return name
    return f"{name} ({f.metadata['flags'][0]})"


@contextlib.contextmanager
def field_errors(name: str):
    """Turn a library's plain ``ValueError`` about a field's value into a :class:`ConfigError`
    that names the YAML key and the flag (library code does not know either)."""
    try:
        yield
    except PUMLCError:
        raise
    except ValueError as err:
        raise ConfigError(f"{describe_field(name)}: {err}") from None


def fields_by_name() -> dict[str, dataclasses.Field]:
    return TrainConfig.__dataclass_fields__


def coerce_field(name: str, value: Any, where: str) -> Any:
    """``value`` converted to the type of the field ``name`` (as a YAML file's value is), or a
    :class:`ConfigError` saying ``where = value must be ...``; the one conversion every outside
    value goes through (config files, search spaces' choice values, sampled values)."""
    return _coerce(fields_by_name()[name], value, where, where=where)


# ------------------------------------------------------------------------------------------------
def _normalized(cfg: TrainConfig) -> dict[str, Any]:
    """Canonical spellings: dataset names, the strings 'None'/'null' of optional paths."""
    changes: dict[str, Any] = {}
    canon = {d.lower(): d for d in DATASETS}
    if isinstance(cfg.dataset, str) and cfg.dataset.lower() in canon:
        changes["dataset"] = canon[cfg.dataset.lower()]
    for name in ("pretrained_model", "tensorboard_dir", "output_dir"):
        value = getattr(cfg, name)
        if isinstance(value, str) and value.strip() in ("", "None", "none", "null"):
            changes[name] = None
    return changes


def _validate(cfg: TrainConfig) -> None:
    """Refuse values that would fail later (or silently train the wrong thing)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata["choices"]:
            _check(value in f.metadata["choices"], f.name, value,
                   f"choose one of {list(f.metadata['choices'])}")
        if isinstance(value, float):
            _check(math.isfinite(value), f.name, value, "must be a finite number")
    _check(0.0 < cfg.prob <= 1.0, "prob", cfg.prob,
           "the kept fraction of labels must lie in (0, 1]; use 1 for full labels")
    _check(cfg.alpha > 0, "alpha", cfg.alpha,
           "alpha scales the temperature min(alpha*std, 1) and must be > 0 (paper: 1.0 COCO, "
           "2.0 VOC)")
    _check(cfg.gamma >= 0, "gamma", cfg.gamma,
           "the re-balance exponent must be >= 0 (paper: 0.55 COCO, 0.85 VOC)")
    _check(0.0 <= cfg.ema < 1.0, "ema", cfg.ema, "the EMA decay must lie in [0, 1)")
    _check(cfg.lr > 0, "lr", cfg.lr, "the learning rate must be > 0")
    _check(cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay, "must be >= 0")
    _check(cfg.mixup_alpha > 0, "mixup_alpha", cfg.mixup_alpha, "Beta(a, a) needs a > 0")
    _check(cfg.asl_gamma_neg >= 0, "asl_gamma_neg", cfg.asl_gamma_neg,
           "the ASL focusing exponent must be >= 0 (ASL paper: 4)")
    _check(cfg.asl_gamma_pos >= 0, "asl_gamma_pos", cfg.asl_gamma_pos,
           "the ASL focusing exponent must be >= 0 (ASL paper: 1)")
    _check(0.0 <= cfg.asl_clip < 1.0, "asl_clip", cfg.asl_clip,
           "the ASL probability margin must lie in [0, 1); 0 disables it (ASL paper: 0.05)")
    _check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "need at least 1 image")
    _check(cfg.workers >= 0, "workers", cfg.workers, "use 0 to load in the training process")
    _check(cfg.epochs >= 1, "epochs", cfg.epochs, "the OneCycle length must be >= 1")
    _check(cfg.train_epochs >= 1, "train_epochs", cfg.train_epochs,
           "train at least one epoch (--Stop_epoch 0 trains one)")
    _check(cfg.train_epochs <= cfg.epochs, "train_epochs", cfg.train_epochs,
           f"the run cuts the {cfg.epochs}-epoch OneCycle schedule (--epochs), so it can train at "
           f"most {cfg.epochs} epochs: --Stop_epoch must be below --epochs")
    _check(cfg.mask_seed >= 0, "mask_seed", cfg.mask_seed,
           "the label-mask seed must be >= 0 (0 = the published mask)")
    _check(0.0 < cfg.pct_start < 1.0, "pct_start", cfg.pct_start, "must lie in (0, 1)")
    _check(cfg.head_dim >= 2 and cfg.head_dim % 2 == 0, "head_dim", cfg.head_dim,
           "the ssgrl head width must be an even number >= 2 (published: 1024)")
    _check(cfg.crop_size >= 32, "crop_size", cfg.crop_size, "use at least 32 pixels")
    _check(cfg.scale_size >= cfg.crop_size // 2, "scale_size", cfg.scale_size,
           "the smallest random crop is scaleSize/2; keep scaleSize >= cropSize/2")
    _check(cfg.num_classes is None or cfg.num_classes >= 1, "num_classes", cfg.num_classes,
           "leave it out to take the dataset's class count")
    _check(0.0 < cfg.val_fraction < 1.0, "val_fraction", cfg.val_fraction,
           "the honest protocol holds out a fraction in (0, 1) of the training images")
    _check(cfg.eval_batch_size is None or cfg.eval_batch_size >= 1, "eval_batch_size",
           cfg.eval_batch_size, "need at least 1 image")
    _check(not (cfg.loss == "bce" and cfg.prob < 1.0), "loss", cfg.loss,
           "'bce' is the full-label baseline and needs --prob 1; with partial labels use "
           "partial_bce (ignores unknown entries) or assume_negative_bce")
    _check(not (cfg.resume and cfg.overwrite), "resume", cfg.resume,
           "--resume continues the run in the output dir and --overwrite replaces it; pick one")
    _check(not (cfg.resume and cfg.output_dir is None), "resume", cfg.resume,
           "--resume continues an earlier run: give its folder with --output-dir")


def _check(ok: bool, name: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{describe_field(name)} = {shown(value)} is not allowed: {fix}")


def _is_bool(f: dataclasses.Field) -> bool:
    return str(f.type) == "bool"


def _shown_default(f: dataclasses.Field) -> Any:
    return f.default - 1 if f.name == "train_epochs" else f.default


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


_TYPES = {"str": str, "int": int, "float": float, "bool": bool,
          "Optional[int]": int, "Optional[str]": str, "Optional[float]": float}


def _argparse_type(f: dataclasses.Field):
    base = _TYPES[str(f.type)]
    if f.name == "dataset":
        def dataset(text: str) -> str:
            return {d.lower(): d for d in DATASETS}.get(text.lower(), text)
        return dataset
    if f.name == "train_epochs":
        def stop_epoch(text: str) -> int:              # published: epochs 0..N are trained
            return int(text) + 1
        stop_epoch.__name__ = "int"
        return stop_epoch
    if str(f.type).startswith("Optional"):
        def parse(text: str, _base=base):
            return None if text in ("None", "none", "null", "") else _base(text)
        parse.__name__ = base.__name__
        return parse
    return base


def _coerce(f: dataclasses.Field, value: Any, source: str, key: Optional[str] = None,
            where: Optional[str] = None) -> Any:
    type_name = str(f.type)
    optional = type_name.startswith("Optional")
    base = _TYPES[type_name]
    where = where or f"{source}: field '{key or f.name}'"
    expected = {bool: "true or false", int: "an integer", float: "a number",
                str: "a string"}[base]
    if isinstance(value, (dict, list, tuple, set)):           # never formatted: may be huge
        raise ConfigError(f"{where} must be {expected}, got {described(value)}")
    if value is None or (optional and value in ("None", "null")):
        if optional:
            return None
        raise ConfigError(f"{where} must not be empty (expected {base.__name__})")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {shown(value)} must be true or false")
    if base is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where} = {shown(value)} must be an integer")
        return int(value)
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} = {shown(value)} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} = {shown(value)} must be a number") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where} = {shown(value)} must be a string, got "
                          f"{described(value)}")
    return value
