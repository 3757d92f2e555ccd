"""One training configuration, from command line to YAML to Ray trial to exported file.

``TrainConfig`` is the contract of the whole project. The published command line of the paper
(``--Stop_epoch``, ``--b``, ``--pretrainedModel`` ...) parses into it, a YAML search space
produces one per trial, a finished trial exports it as YAML and as the exact ``train_entry.py``
command that reproduces it. Every field is declared once, below, with the flag that sets it, so a
field that exists in one of these places exists in all of them (``tests/test_config.py`` checks
the round trips).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import yaml

from .errors import ConfigError

#: Dataset names accepted by ``--dataset`` (case-insensitive on input, canonical spelling here).
DATASETS = ("COCO2014", "VOC2007", "coco")
LOSSES = ("pu", "bce", "partial_bce", "assume_negative_bce", "asl")
HEADS = ("ssgrl", "linear")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PROTOCOLS = ("paper", "honest")
DEVICES = ("auto", "cpu", "cuda")
LGC_IMPLS = ("fast", "literal")
DATA_PIPELINES = ("auto", "pil", "tensor")


def _opt(default: Any, *flags: str, help: str, choices: Optional[Sequence[str]] = None,
         published: bool = False, run_control: bool = False, metavar: Optional[str] = None):
    """Declare a config field together with its command-line flags.

    ``published`` marks flags of the paper's ``train.py`` (kept spelled as published);
    ``run_control`` marks fields that steer *this run* (overwrite, resume) and are not part of
    the experiment, so they are left out of exported configs and commands.
    """
    return field(default=default, metadata={
        "flags": flags, "help": help, "choices": choices, "published": published,
        "run_control": run_control, "metavar": metavar})


@dataclass
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
                       help="fraction of training label entries kept (seed-0 mask); 1 = full-label "
                            "MLC, < 1 = MLC with partial labels")
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
                                   "decode+augment on the training device; auto: tensor on CUDA")
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
    word_vectors: str = _opt("glove", "--word-vectors",
                             help="class word vectors for the ssgrl head: 'glove' (GloVe 6B-50d "
                                  "of the class names) or a .npy file of shape C x d")
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
    # --- optimisation ------------------------------------------------------------------------
    batch_size: int = _opt(35, "--b", "--batch-size", published=True,
                           help="images per training process (the PU statistics are per process)")
    lr: float = _opt(1e-4, "--lr", published=True, help="OneCycle maximum learning rate")
    weight_decay: float = _opt(1e-4, "--weight-decay", help="Adam weight decay")
    ema: float = _opt(0.9997, "--ema", published=True, help="EMA decay, applied every step")
    epochs: int = _opt(80, "--epochs", help="OneCycle schedule length in epochs")
    stop_epoch: int = _opt(40, "--Stop_epoch", published=True,
                           help="last epoch trained (epochs 0..Stop_epoch run); cuts the schedule")
    pct_start: float = _opt(0.2, "--pct-start", help="OneCycle warm-up fraction")
    seed: int = _opt(0, "--seed", help="seed of training randomness (the label mask is always "
                                       "seed 0, as published)")
    # --- execution ---------------------------------------------------------------------------
    precision: str = _opt("auto", "--precision", choices=PRECISIONS,
                          help="autocast dtype: auto = bf16 on CUDA when supported, else fp32 "
                               "on CPU; fp16 uses a GradScaler as published")
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
    val_fraction: float = _opt(0.1, "--val-fraction",
                               help="honest protocol: fraction of training images held out for "
                                    "validation when the dataset has no val split")
    output_dir: str = _opt("runs/train", "--output-dir", "-o",
                           help="where checkpoints, metrics.json and TensorBoard files go")
    tensorboard_dir: Optional[str] = _opt(None, "--tensorboard-dir",
                                          help="TensorBoard run directory (default: "
                                               "OUTPUT_DIR/tensorboard)")
    overwrite: bool = _opt(False, "--overwrite", run_control=True,
                           help="allow replacing results already in the output dir")
    resume: bool = _opt(False, "--resume", run_control=True,
                        help="continue from OUTPUT_DIR/checkpoints/last.pt")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # --- normalisation and validation ----------------------------------------------------------
    def normalized(self) -> "TrainConfig":
        """Canonical spellings: dataset names, ``'None'`` strings, absolute-free paths kept as given."""
        changes: dict[str, Any] = {}
        canon = {d.lower(): d for d in DATASETS}
        if isinstance(self.dataset, str) and self.dataset.lower() in canon:
            changes["dataset"] = canon[self.dataset.lower()]
        for name in ("pretrained_model", "tensorboard_dir"):
            value = getattr(self, name)
            if isinstance(value, str) and value.strip() in ("", "None", "none", "null"):
                changes[name] = None
        return self.replace(**changes) if changes else self

    def validate(self) -> "TrainConfig":
        """Refuse values that would fail later (or silently train the wrong thing).

        Returns the normalised config so callers can write ``cfg = cfg.validate()``.
        """
        cfg = self.normalized()
        _check(cfg.data != "", "data", cfg.data, "give the dataset root directory")
        _check_choice(cfg, "dataset", DATASETS)
        _check_choice(cfg, "loss", LOSSES)
        _check_choice(cfg, "head", HEADS)
        _check_choice(cfg, "precision", PRECISIONS)
        _check_choice(cfg, "protocol", PROTOCOLS)
        _check_choice(cfg, "device", DEVICES)
        _check_choice(cfg, "lgc_impl", LGC_IMPLS)
        _check_choice(cfg, "data_pipeline", DATA_PIPELINES)
        _check(0.0 < cfg.prob <= 1.0, "prob", cfg.prob,
               "the kept fraction of labels must lie in (0, 1]; use 1 for full labels")
        _check(cfg.alpha > 0 and math.isfinite(cfg.alpha), "alpha", cfg.alpha,
               "alpha scales the temperature min(alpha*std, 1) and must be > 0 (paper: 1.0 COCO, "
               "2.0 VOC)")
        _check(cfg.gamma >= 0 and math.isfinite(cfg.gamma), "gamma", cfg.gamma,
               "the re-balance exponent must be >= 0 (paper: 0.55 COCO, 0.85 VOC)")
        _check(0.0 <= cfg.ema < 1.0, "ema", cfg.ema, "the EMA decay must lie in [0, 1)")
        _check(cfg.lr > 0, "lr", cfg.lr, "the learning rate must be > 0")
        _check(cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay, "must be >= 0")
        _check(cfg.mixup_alpha > 0, "mixup_alpha", cfg.mixup_alpha, "Beta(a, a) needs a > 0")
        _check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "need at least 1 image")
        _check(cfg.workers >= 0, "workers", cfg.workers, "use 0 to load in the training process")
        _check(cfg.epochs >= 1, "epochs", cfg.epochs, "the OneCycle length must be >= 1")
        _check(0 <= cfg.stop_epoch, "stop_epoch", cfg.stop_epoch,
               "epochs 0..Stop_epoch are trained; use 0 for one epoch")
        _check(cfg.stop_epoch < cfg.epochs, "stop_epoch", cfg.stop_epoch,
               f"must be below --epochs ({cfg.epochs}), the length of the OneCycle schedule")
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
               "--resume continues the run in the output dir and --overwrite replaces it; "
               "pick one")
        return cfg

    # --- dict / YAML --------------------------------------------------------------------------
    def to_dict(self, include_run_control: bool = False) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            if f.metadata["run_control"] and not include_run_control:
                continue
            out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> "TrainConfig":
        """Build a config from a mapping, refusing unknown keys and wrongly typed values."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown field(s) {unknown}; allowed fields are {sorted(known)}")
        kwargs = {}
        for name, value in values.items():
            kwargs[name] = _coerce(known[name], value, source)
        return cls(**kwargs)

    def to_yaml(self, path: Optional[str | Path] = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields, got "
                              f"{type(values).__name__}")
        return cls.from_dict(values, source=str(path))

    # --- command line -------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one argument per field; the published flags keep their spelling."""
        parser.add_argument("data", metavar="DATA_ROOT",
                            help=cls.__dataclass_fields__["data"].metadata["help"])
        published = parser.add_argument_group("published flags (the paper's train.py)")
        ours = parser.add_argument_group("pu-mlc flags")
        for f in fields(cls):
            if f.name == "data":
                continue
            meta = f.metadata
            group = published if meta["published"] else ours
            kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                                      "help": meta["help"] + f" (default: {f.default})"}
            if meta["choices"]:
                kwargs["choices"] = list(meta["choices"])
                if f.name == "dataset":
                    kwargs["type"] = _dataset_name
            if f.type in ("bool", bool):
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs.setdefault("type", _argparse_type(f))
            group.add_argument(*meta["flags"], **kwargs)

    @classmethod
    def from_cli(cls, argv: Sequence[str]) -> "TrainConfig":
        parser = argparse.ArgumentParser(prog="train_entry.py train")
        cls.add_arguments(parser)
        return cls.from_namespace(parser.parse_args(list(argv)))

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> "TrainConfig":
        values = {k: v for k, v in vars(ns).items() if k in cls.__dataclass_fields__}
        return cls(**values).normalized()

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
            if f.type in ("bool", bool):
                args.append(flag if value else "--no-" + flag[2:])
            elif value is None:
                if f.name == "pretrained_model":
                    args.append(f"{flag}=None")
                # other optional fields: absent means default (None)
            else:
                args.append(f"{flag}={shlex.quote(_format_value(value))}")
        return f"{program} " + " ".join(args)


# ------------------------------------------------------------------------------------------------
def _check(ok: bool, name: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{describe_field(name)} = {value!r} is not allowed: {fix}")


def _check_choice(cfg: TrainConfig, name: str, choices: Iterable[str]) -> None:
    value = getattr(cfg, name)
    _check(value in choices, name, value, f"choose one of {list(choices)}")


def describe_field(name: str) -> str:
    """'prob (--prob)': the YAML key and the flag, so messages help CLI and YAML users alike."""
    f = TrainConfig.__dataclass_fields__.get(name)
    if f is None or not f.metadata.get("flags"):
        return name
    return f"{name} ({f.metadata['flags'][0]})"


def _dataset_name(value: str) -> str:
    canon = {d.lower(): d for d in DATASETS}
    return canon.get(value.lower(), value)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


_TYPES = {"str": str, "int": int, "float": float, "bool": bool,
          "Optional[int]": int, "Optional[str]": str, "Optional[float]": float}


def _argparse_type(f: dataclasses.Field):
    base = _TYPES[str(f.type)]
    if str(f.type).startswith("Optional"):
        def parse(text: str, _base=base):
            return None if text in ("None", "none", "null", "") else _base(text)
        parse.__name__ = base.__name__
        return parse
    return base


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    type_name = str(f.type)
    optional = type_name.startswith("Optional")
    base = _TYPES[type_name]
    where = f"{source}: field '{f.name}'"
    if value is None or (optional and value in ("None", "null")):
        if optional:
            return None
        raise ConfigError(f"{where} must not be empty (expected {base.__name__})")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r} must be true or false")
    if base is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where} = {value!r} must be an integer")
        return int(value)
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} = {value!r} must be a number") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where} = {value!r} must be a string")
    return value
