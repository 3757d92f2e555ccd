"""The names a ``TrainConfig`` field may take, in one module that imports nothing.

Why here and not in the modules that use them: ``pu_mlc.config`` needs every list to validate a
config, and ``TrainConfig`` is unpickled in processes that never train (the CLI, a study's Tune
driver, each trial's Tune trainable and Ray Train controller). Reading the lists from the modules
that implement them imported torch, torchvision and timm there: about 5 s of CPU per process,
paid on every trial's critical path. The implementing modules import their list from here;
``losses.factory`` checks at import that it builds exactly ``LOSS_NAMES``.
"""

#: Dataset readers of ``pu_mlc.data.registry.load_dataset``.
DATASETS = ("COCO2014", "VOC2007", "coco")
#: Where images are decoded and augmented (``pu_mlc.engine.data_setup``).
DATA_PIPELINES = ("auto", "pil", "tensor")
#: ``pu_mlc.engine.distributed``.
DEVICES = ("auto", "cpu", "cuda")
#: ``pu_mlc.engine.precision``.
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
#: Model selection and reporting protocols (``pu_mlc.engine.protocols``).
PROTOCOLS = ("paper", "honest")
#: How OF1/CF1 are reported: at score 0.5, or each the best over the published threshold sweep.
F1_MODES = ("fixed", "sweep")
#: Losses of ``pu_mlc.losses.factory.build_loss``.
LOSS_NAMES = ("pu", "bce", "partial_bce", "assume_negative_bce", "asl")
#: Classifier heads (``pu_mlc.models.heads``).
HEADS = ("ssgrl", "linear")
#: Implementations of the local-global convolution (``pu_mlc.models.lgc``).
LGC_IMPLS = ("fast", "literal")
#: The TensorBoard scalars that are the HParams tab's metric columns, per protocol: only tags the
#: protocol writes every epoch (``pu_mlc.engine.protocols``), so no column stays empty (the
#: honest protocol scores the test set only for the selected model: no ``test/mAP`` curve).
HPARAM_METRICS = {
    "paper": ("selected/score", "selected/test_mAP", "test/mAP", "test/mAP_ema", "train/loss"),
    "honest": ("selected/score", "selected/test_mAP", "val/mAP", "val/mAP_ema", "train/loss"),
}
#: What each loss computes when every label entry is known (``prob == 1``: no entry is 0), as
#: the name of the loss it then equals. Two methods whose losses map to the same name here train
#: identically at full labels, so a search runs one study for both (``tune.space``). Kept here,
#: torch-free, because spaces are parsed without importing torch; each loss class states the
#: same as ``full_label_equivalent`` and ``losses.factory`` checks at import that both agree.
FULL_LABEL_EQUIVALENT = {
    "pu": "pu",                           # the PU loss never reads known negatives: unchanged
    "bce": "bce",
    "partial_bce": "bce",                 # ignores unknown entries, and there are none
    "assume_negative_bce": "bce",         # takes unknown entries as negative, and there are none
    "asl": "asl",                         # ASL's focusing differs from BCE at any proportion
}
#: Why a loss equals its full-label equivalent, in words (reports and summaries quote it).
FULL_LABEL_REASON = {
    "partial_bce": "partial BCE ignores unknown label entries",
    "assume_negative_bce": "assume-negative BCE takes unknown label entries as negatives",
}

def loss_at(loss: str, prob: float) -> str:
    """The loss ``loss`` really computes at known-label proportion ``prob``: its full-label
    equivalent when every entry is known (``prob >= 1``), else itself."""
    return FULL_LABEL_EQUIVALENT.get(loss, loss) if prob >= 1 else loss
