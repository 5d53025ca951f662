"""The finite-loss check shared by the training loops."""

import math

import pytest
import torch

from common.adversarial import GANTraining
from common.errors import UserError
from common.training import check_finite_losses


def test_finite_losses_pass(tmp_path):
    check_finite_losses(torch.ones(3, 2), ["training loss", "training KL"], "VAE", 1, 1, tmp_path)


def test_first_bad_loss_named(tmp_path):
    losses = torch.ones(4, 2)
    losses[2, 1] = math.inf
    losses[3, 0] = math.nan
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(UserError) as raised:
        check_finite_losses(losses, ["training loss", "training KL"], "VAE", 5, 21, tmp_path)
    assert str(raised.value) == (
        f"VAE: the training KL became inf at epoch 5, iteration 23; the last good checkpoint is {tmp_path / 'checkpoint.pt'}. "
        "Try a lower LEARNING_RATE"
    )


def test_gan_message_unchanged(tmp_path):
    losses = torch.zeros(3, 2)
    losses[1, 1] = math.nan
    with pytest.raises(UserError) as raised:
        check_finite_losses(losses, GANTraining.loss_names, "DCGAN", 3, 6, tmp_path)
    assert str(raised.value) == "DCGAN: the generator loss became nan at epoch 3, iteration 7; no checkpoint was saved yet. Try a lower LEARNING_RATE"
