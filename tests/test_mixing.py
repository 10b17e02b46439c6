import pytest
import torch
from torch import nn

from cifar_resnet.config import ConfigError, TrainConfig, config_from_dict
from cifar_resnet.data.mixing import Ricap, make_batch_mix


def labelled_batch(b=8, size=16):
    """Image i is filled with the value i in channel 0 and with each pixel's row and column in channels 1, 2."""
    rows = torch.arange(size).view(1, size, 1).expand(b, size, size)
    cols = torch.arange(size).view(1, 1, size).expand(b, size, size)
    ids = torch.arange(b).view(b, 1, 1).expand(b, size, size)
    return torch.stack([ids, rows, cols], 1).float(), torch.arange(b)


def test_ricap_keeps_shapes_and_weights_labels_by_pixel_share():
    x, y = labelled_batch()
    mixed, target = Ricap(0.3, seed=0)(x, y)
    assert mixed.shape == x.shape and target.shape == (8, 10)
    assert torch.allclose(target.sum(1), torch.ones(8))
    for j in range(8):  # each label's weight is the share of pixels taken from its image
        share = torch.bincount(mixed[j, 0].long().flatten(), minlength=10).float() / mixed[j, 0].numel()
        assert torch.allclose(share, target[j])
    assert mixed[:, 1:].min() >= 0 and mixed[:, 1:].max() <= 15  # every pixel is a pixel of its source


def test_ricap_uses_four_sources_over_many_batches_and_stays_within_an_image():
    x, y = labelled_batch()
    ricap = Ricap(1.0, seed=3)
    counts = []
    for _ in range(20):
        mixed, target = ricap(x, y)
        counts.append(int((target > 0).sum(1).max()))
        # crops, not resizes: neighbours are neighbours in their source, except across the one boundary
        # column (and row) of each image
        jumps_across = (mixed[:, 2, :, 1:] - mixed[:, 2, :, :-1] != 1).any(1)  # (B, W - 1)
        jumps_down = (mixed[:, 1, 1:, :] - mixed[:, 1, :-1, :] != 1).any(2)  # (B, H - 1)
        assert jumps_across.sum(1).max() <= 1 and jumps_down.sum(1).max() <= 1
    assert max(counts) >= 3


def test_ricap_is_reproducible_under_a_seed_and_resumable():
    x, y = labelled_batch()
    a, b, c = Ricap(0.3, seed=5), Ricap(0.3, seed=5), Ricap(0.3, seed=6)
    first = a(x, y)
    assert all(torch.equal(u, v) for u, v in zip(first, b(x, y)))
    assert not torch.equal(first[0], c(x, y)[0])
    state = a.state_dict()
    expected = a(x, y)
    fresh = Ricap(0.3, seed=0)
    fresh.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(expected, fresh(x, y)))


def test_soft_targets_work_with_label_smoothing():
    x, y = labelled_batch()
    mixed, target = Ricap(0.3, seed=0)(x, y)
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)(torch.zeros(8, 10), target)
    assert torch.isclose(loss, torch.log(torch.tensor(10.0)))


def test_make_batch_mix_choices_and_errors():
    assert make_batch_mix(TrainConfig(), "cpu") is None
    assert isinstance(make_batch_mix(TrainConfig(ricap_beta=0.3), "cpu"), Ricap)
    x, y = labelled_batch()
    mixed, target = make_batch_mix(TrainConfig(cutmix_alpha=1.0), "cpu")(x, y)
    assert mixed.shape == x.shape and torch.allclose(target.sum(1), torch.ones(8))
    with pytest.raises(ConfigError, match="train.ricap_beta cannot be combined"):
        make_batch_mix(TrainConfig(ricap_beta=0.3, mixup_alpha=0.2), "cpu")
    with pytest.raises(ConfigError, match="train.ricap_beta: must be at least 0"):  # checked on reading
        config_from_dict({"train": {"ricap_beta": -1.0}})
    with pytest.raises(ConfigError, match="train.mixup_alpha: must be at least 0"):
        config_from_dict({"train": {"mixup_alpha": -1.0}})
