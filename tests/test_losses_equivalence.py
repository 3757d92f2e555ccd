"""What a loss equals when every label is known, stated once by the loss and once, torch-free,
for the search: partial BCE and assume-negative BCE are BCE at full labels, PU and ASL stay
themselves, and the two statements cannot drift apart (the factory refuses to import)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pu_mlc.choices import FULL_LABEL_EQUIVALENT, LOSS_NAMES, loss_at
from pu_mlc.losses import build_loss
from pu_mlc.losses.factory import LOSS_CLASSES, full_label_equivalents


def full_labels(n=8, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    targets = torch.where(torch.rand(n, c, generator=g) < 0.3, 1, -1)
    return z, targets


def test_every_loss_class_states_what_the_torch_free_table_says_it_equals_at_full_labels():
    assert set(FULL_LABEL_EQUIVALENT) == set(LOSS_NAMES)
    assert full_label_equivalents(LOSS_CLASSES) == FULL_LABEL_EQUIVALENT
    for name in LOSS_NAMES:
        assert type(build_loss(name)).full_label_equivalent == FULL_LABEL_EQUIVALENT[name]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_with_the_same_full_label_equivalent_compute_it_exactly_at_full_labels(seed):
    z, targets = full_labels(seed=seed)
    for name, equivalent in FULL_LABEL_EQUIVALENT.items():
        value = build_loss(name)(z, targets)
        reference = build_loss(equivalent)(z, targets)
        assert torch.allclose(value, reference, rtol=1e-12, atol=0), name


def test_losses_with_another_equivalent_differ_at_full_labels():
    z, targets = full_labels()
    bce = build_loss("bce")(z, targets)
    for name in ("pu", "asl"):
        assert FULL_LABEL_EQUIVALENT[name] == name
        assert not torch.allclose(build_loss(name)(z, targets), bce), name


def test_with_unknown_entries_partial_and_assume_negative_bce_are_different_losses():
    z, targets = full_labels()
    targets = targets.clone()
    targets[::2, ::2] = 0                                 # some entries unknown
    assert not torch.allclose(build_loss("partial_bce")(z, targets),
                              build_loss("assume_negative_bce")(z, targets))
    assert loss_at("partial_bce", 0.1) == "partial_bce"
    assert loss_at("assume_negative_bce", 0.9) == "assume_negative_bce"
    assert loss_at("partial_bce", 1.0) == loss_at("assume_negative_bce", 1.0) == "bce"
    assert loss_at("pu", 1.0) == "pu" and loss_at("asl", 1.0) == "asl"


def test_the_losses_refuse_to_import_when_the_table_and_a_loss_disagree():
    code = ("import pu_mlc.choices as c\n"
            "c.FULL_LABEL_EQUIVALENT['asl'] = 'bce'\n"
            "import pu_mlc.losses\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "FULL_LABEL_EQUIVALENT" in proc.stderr
