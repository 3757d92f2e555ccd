"""TrainConfig: the published command line, YAML and the exported command all round-trip."""

import dataclasses
import pickle
import shlex
from pathlib import Path

import pytest
import torch

from pu_mlc.config import TrainConfig, field_errors, parse_train_args
from pu_mlc.engine.precision import resolve_precision
from pu_mlc.errors import ConfigError

COCO_PUBLISHED = (
    "/data/coco --dataset=COCO2014 --model-name=resnet101 --pretrainedModel=/w/resnet101.pth "
    "--workers=8 --scaleSize=512 --cropSize=448 --topK=1 --b=35 --num-classes=80 --lr=1e-4 "
    "--ema=0.9997 --Stop_epoch=40 --alpha=1.0 --prob=0.1 --gamma=0.55")
VOC_PUBLISHED = (
    "/data/voc --dataset=VOC2007 --model-name=resnet101 --pretrainedModel=None --workers=8 "
    "--scaleSize=512 --cropSize=448 --topK=1 --b=45 --num-classes=20 --lr=4e-5 --Stop_epoch=55 "
    "--ema=0.991 --alpha=2.0 --prob=0.1 --gamma=0.85")


def test_published_coco_command_line_parses_into_the_published_setting():
    cfg = TrainConfig.from_cli(COCO_PUBLISHED.split())
    assert (cfg.dataset, cfg.batch_size, cfg.train_epochs, cfg.ema) == ("COCO2014", 35, 41, 0.9997)
    assert (cfg.alpha, cfg.gamma, cfg.prob, cfg.lr) == (1.0, 0.55, 0.1, 1e-4)
    assert cfg.pretrained_model == "/w/resnet101.pth" and cfg.num_classes == 80


def test_published_voc_command_line_turns_the_string_None_into_no_weights():
    cfg = TrainConfig.from_cli(VOC_PUBLISHED.split())
    assert cfg.pretrained_model is None
    assert (cfg.dataset, cfg.batch_size, cfg.alpha, cfg.gamma) == ("VOC2007", 45, 2.0, 0.85)


@pytest.mark.parametrize("argv", [COCO_PUBLISHED, VOC_PUBLISHED + " --no-lgc --loss=asl"])
def test_to_cli_reproduces_the_config_field_for_field(argv):
    cfg = TrainConfig.from_cli(argv.split())
    again = TrainConfig.from_cli(shlex.split(cfg.to_cli())[2:])
    assert again == cfg


def test_yaml_round_trip_keeps_every_field(tmp_path):
    cfg = TrainConfig.from_cli(COCO_PUBLISHED.split()).replace(eval_batch_size=7)
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_yaml_with_an_unknown_field_is_refused_with_the_allowed_fields(tmp_path):
    (tmp_path / "c.yaml").write_text("data: x\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate.*allowed fields"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")


def test_yaml_with_a_wrongly_typed_value_names_the_field(tmp_path):
    (tmp_path / "c.yaml").write_text("data: x\nbatch_size: many\n")
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")


@pytest.mark.parametrize("flag,fix", [("--prob=0", r"\(0, 1\]"), ("--prob=1.5", r"\(0, 1\]"),
                                      ("--alpha=0", "must be > 0"),
                                      ("--alpha=-1", "must be > 0"),
                                      ("--ema=1.0", r"\[0, 1\)"),
                                      ("--Stop_epoch=80", "below --epochs"),
                                      ("--lr=inf", "finite"), ("--lr=nan", "finite"),
                                      ("--loss=bce --prob=0.5", "partial_bce"),
                                      ("--head-dim=3", "even number")])
def test_invalid_values_are_refused_naming_the_flag_and_the_fix(flag, fix):
    with pytest.raises(ConfigError, match=fix) as err:
        TrainConfig.from_cli(["/d", *flag.split()])
    assert flag.split()[-1].split("=")[0] in str(err.value)


def test_dataset_names_are_case_insensitive():
    assert TrainConfig.from_cli(["/d", "--dataset=coco2014"]).dataset == "COCO2014"
    assert TrainConfig.from_cli(["/d", "--dataset=voc2007"]).dataset == "VOC2007"


# --- one frozen, validated object ---------------------------------------------------------------
def test_a_config_is_frozen_and_checked_when_it_is_made():
    cfg = TrainConfig(data="/d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    with pytest.raises(ConfigError, match=r"ema \(--ema\)"):
        TrainConfig(data="/d", ema=1.5)
    with pytest.raises(ConfigError, match=r"alpha \(--alpha\)"):
        cfg.replace(alpha=0.0)                      # a changed copy is checked too


def test_a_config_crosses_a_process_boundary_as_it_is():
    cfg = TrainConfig.from_cli(COCO_PUBLISHED.split())
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_values_from_a_sampler_are_converted_to_the_field_types():
    cfg = TrainConfig(data="/d").updated({"batch_size": 16.0, "lr": 1}, source="trial t1")
    assert type(cfg.batch_size) is int and type(cfg.lr) is float
    with pytest.raises(ConfigError, match="trial t1: field 'batch_size'"):
        TrainConfig(data="/d").updated({"batch_size": 2.5}, source="trial t1")


def test_choice_lists_are_those_of_the_modules_that_use_them():
    from pu_mlc import config
    from pu_mlc.choices import DATASETS
    from pu_mlc.engine.precision import PRECISIONS
    from pu_mlc.engine.protocols import PROTOCOLS
    from pu_mlc.losses.factory import _BUILDERS, LOSS_NAMES
    from pu_mlc.models.heads import HEADS

    fields = TrainConfig.__dataclass_fields__
    assert fields["loss"].metadata["choices"] is LOSS_NAMES
    assert fields["head"].metadata["choices"] is HEADS
    assert fields["precision"].metadata["choices"] is PRECISIONS
    assert fields["protocol"].metadata["choices"] is PROTOCOLS
    assert fields["dataset"].metadata["choices"] is DATASETS
    assert config.LOSSES is LOSS_NAMES
    assert tuple(_BUILDERS) == LOSS_NAMES


def test_importing_the_config_imports_no_torch():
    """Every Ray process that unpickles a TrainConfig imports this module (see pu_mlc.choices),
    and a study's driver also marks trial outcomes (pu_mlc.files): they must stay free of torch,
    torchvision and timm (seconds of CPU and half a GB per process otherwise)."""
    import subprocess
    import sys

    code = ("import sys, pu_mlc.config, pu_mlc.files, tune.trial, tune.study, tune.export; "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --- epochs: counted one way, the published flag converted once -------------------------------
def test_stop_epoch_keeps_its_published_meaning_at_the_flag_only():
    cfg = TrainConfig.from_cli(["/d", "--Stop_epoch=0"])
    assert cfg.train_epochs == 1                      # epochs 0..0 published = one epoch
    assert TrainConfig.from_cli(["/d", "--train-epochs=3"]).train_epochs == 3
    assert "--Stop_epoch=40" in TrainConfig.from_cli(COCO_PUBLISHED.split()).to_cli()


def test_a_yaml_written_with_stop_epoch_is_read_with_the_published_meaning(tmp_path):
    (tmp_path / "c.yaml").write_text("data: /d\nstop_epoch: 40\n")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml").train_epochs == 41
    (tmp_path / "both.yaml").write_text("data: /d\nstop_epoch: 40\ntrain_epochs: 41\n")
    with pytest.raises(ConfigError, match="either train_epochs or stop_epoch"):
        TrainConfig.from_yaml(tmp_path / "both.yaml")


# --- the command line ---------------------------------------------------------------------------
def test_a_config_file_replaces_the_data_root_and_flags_override_it(tmp_path):
    saved = TrainConfig.from_cli(VOC_PUBLISHED.split())
    saved.to_yaml(tmp_path / "best_config.yaml")
    cfg, _ = parse_train_args(["--config", str(tmp_path / "best_config.yaml"), "--lr=1e-3"])
    assert cfg == saved.replace(lr=1e-3)
    cfg, _ = parse_train_args(["/other", "--config", str(tmp_path / "best_config.yaml")])
    assert cfg.data == "/other"


def test_without_a_data_root_anywhere_the_message_says_where_to_give_it(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.001\n")
    with pytest.raises(ConfigError, match="give DATA_ROOT, or a --config file with a 'data'"):
        parse_train_args(["--config", str(tmp_path / "c.yaml")])


def test_a_directory_given_as_config_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        parse_train_args(["--config", str(tmp_path)])


def test_abbreviated_flags_are_refused():
    with pytest.raises(SystemExit):
        parse_train_args(["/d", "--Stop_epo=3"])


def test_the_paper_preset_sets_the_official_execution_and_flags_still_win():
    cfg, _ = parse_train_args(["/d", "--preset=paper"])
    assert (cfg.precision, cfg.data_pipeline, cfg.protocol, cfg.f1_thresholds) == (
        "fp16", "pil", "paper", "sweep")
    cfg, _ = parse_train_args(["/d", "--preset=paper", "--precision=fp32"])
    assert cfg.precision == "fp32" and cfg.f1_thresholds == "sweep"


def test_a_library_value_error_is_reported_with_the_field_and_flag():
    with pytest.raises(ConfigError, match=r"^precision \(--precision\): 'fp16' needs CUDA"):
        with field_errors("precision"):
            resolve_precision("fp16", torch.device("cpu"))


# --- baseline knobs and the label-mask seed -----------------------------------------------------
def test_asl_parameters_and_the_mask_seed_default_to_the_published_values():
    cfg = TrainConfig(data="/d")
    assert (cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip) == (4.0, 1.0, 0.05)
    assert cfg.mask_seed == 0 and cfg.seed == 0


def test_asl_parameters_and_the_mask_seed_parse_from_their_flags():
    cfg = TrainConfig.from_cli(["/d", "--loss=asl", "--asl-gamma-neg=2", "--asl-gamma-pos=0",
                                "--asl-clip=0", "--mask-seed=3"])
    assert (cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip, cfg.mask_seed) == (
        2.0, 0.0, 0.0, 3)
    assert type(cfg.asl_gamma_neg) is float and type(cfg.mask_seed) is int
    assert "--mask-seed=3" in cfg.to_cli() and "--asl-clip=0.0" in cfg.to_cli()
    assert TrainConfig.from_cli(shlex.split(cfg.to_cli())[2:]) == cfg


@pytest.mark.parametrize("flag,fix", [("--asl-gamma-neg=-1", ">= 0"),
                                      ("--asl-gamma-pos=-0.5", ">= 0"),
                                      ("--asl-clip=-0.1", r"\[0, 1\)"),
                                      ("--asl-clip=1", r"\[0, 1\)"),
                                      ("--asl-clip=nan", "finite"),
                                      ("--mask-seed=-1", ">= 0")])
def test_invalid_asl_parameters_and_mask_seeds_are_refused_naming_the_flag(flag, fix):
    name = flag[2:].split("=")[0].replace("-", "_")
    with pytest.raises(ConfigError, match=fix) as err:
        TrainConfig.from_cli(["/d", flag])
    assert f"{name} ({flag.split('=')[0]})" in str(err.value)


def test_asl_parameters_and_the_mask_seed_round_trip_through_yaml_and_a_sampler(tmp_path):
    cfg = TrainConfig(data="/d", loss="asl", prob=0.1, asl_gamma_neg=3.5, asl_gamma_pos=0.0,
                      asl_clip=0.0, mask_seed=2)
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg
    sampled = TrainConfig(data="/d").updated(
        {"asl_gamma_neg": 2, "asl_clip": 0, "mask_seed": 1.0}, source="trial t1")
    assert (sampled.asl_gamma_neg, sampled.asl_clip, sampled.mask_seed) == (2.0, 0.0, 1)
    assert type(sampled.asl_gamma_neg) is float and type(sampled.mask_seed) is int
    with pytest.raises(ConfigError, match="trial t1: field 'mask_seed'"):
        TrainConfig(data="/d").updated({"mask_seed": 1.5}, source="trial t1")


def test_a_yaml_written_before_the_new_fields_reads_with_the_published_values(tmp_path):
    (tmp_path / "c.yaml").write_text("data: /d\nloss: asl\nprob: 0.1\n")
    cfg = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert (cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip, cfg.mask_seed) == (
        4.0, 1.0, 0.05, 0)


def test_every_field_but_the_data_root_has_its_own_flag_and_a_help_text():
    seen: dict[str, str] = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        assert meta["help"], f.name
        if f.name == "data":
            assert not meta["flags"]                    # positional DATA_ROOT
            continue
        assert meta["flags"] and all(flag.startswith("-") for flag in meta["flags"]), f.name
        for flag in (*meta["flags"], *meta["more_flags"]):
            assert flag not in seen, f"{flag} is the flag of {seen.get(flag)} and {f.name}"
            seen[flag] = f.name
    assert {"--asl-gamma-neg", "--asl-gamma-pos", "--asl-clip", "--mask-seed"} <= set(seen)
