"""TrainConfig: the published command line, YAML and the exported command all round-trip."""

import shlex

import pytest

from pu_mlc.config import TrainConfig
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
    assert (cfg.dataset, cfg.batch_size, cfg.stop_epoch, cfg.ema) == ("COCO2014", 35, 40, 0.9997)
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
                                      ("--loss=bce --prob=0.5", "partial_bce"),
                                      ("--head-dim=3", "even number")])
def test_invalid_values_are_refused_naming_the_flag_and_the_fix(flag, fix):
    cfg = TrainConfig.from_cli(["/d", *flag.split()])
    with pytest.raises(ConfigError, match=fix) as err:
        cfg.validate()
    assert flag.split()[-1].split("=")[0] in str(err.value)


def test_dataset_names_are_case_insensitive():
    assert TrainConfig.from_cli(["/d", "--dataset=coco2014"]).dataset == "COCO2014"
    assert TrainConfig.from_cli(["/d", "--dataset=voc2007"]).dataset == "VOC2007"
