import pytest
import torch

from cifar_resnet.config import DataConfig
from cifar_resnet.data.cifar10 import load_cifar10
from cifar_resnet.data.gpu_loader import GpuLoader, crop_flip, cutout


@pytest.fixture(scope="module")
def train(synthetic_root):
    return load_cifar10(synthetic_root, "train", download=False)


AUGMENT = DataConfig(crop_padding=4, flip=True, cutout=8, policy="trivialaugment")


def batches(split, seed, augment=AUGMENT, **kw):
    loader = GpuLoader(split, batch_size=64, device="cpu", train=True, augment=augment, seed=seed, **kw)
    return list(loader)


def test_training_batches_keep_shapes_dtypes_and_labels(train):
    out = batches(train, seed=0, channels_last=True)
    assert len(out) == 400 // 64
    for x, y in out:
        assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last)
    seen = torch.cat([y for _, y in out])
    assert seen.bincount(minlength=10).sum() == len(seen)  # every label is a real label
    assert len(seen) == 384


def test_without_channels_last_batches_are_contiguous(train):
    """The crop's gather leaves a batch channels-last; a network trained in NCHW gets NCHW (oneDNN's
    channels-last backward of narrow strided 1x1 convolutions corrupts memory on a CPU)."""
    for x, _ in batches(train, seed=0) + list(GpuLoader(train, batch_size=100, device="cpu", train=False)):
        assert x.is_contiguous()


def test_augmented_labels_follow_their_images(train):
    loader = GpuLoader(train, batch_size=400, device="cpu", train=True, augment=DataConfig(crop_padding=0, flip=False), seed=3)
    x, y = next(iter(loader))
    # without augmentation each output image is an input image with that image's label
    flat = loader.normalize(loader.images).flatten(1)
    index = torch.cdist(x.flatten(1), flat).argmin(1)
    assert torch.equal(loader.labels[index], y)


def test_augmentation_is_reproducible_under_a_seed(train):
    a, b, c = batches(train, seed=1), batches(train, seed=1), batches(train, seed=2)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])


def test_policy_does_not_touch_the_global_random_stream(train):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    batches(train, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_crop_flip_without_shift_or_flip_is_identity_and_flip_mirrors(train):
    images = train.images[:8].permute(0, 3, 1, 2).contiguous()
    g = torch.Generator().manual_seed(0)
    assert torch.equal(crop_flip(images, 0, False, g), images)
    flipped = crop_flip(images, 0, True, g)
    for out, img in zip(flipped, images):
        assert torch.equal(out, img) or torch.equal(out, img.flip(-1))


def test_crop_flip_mirrors_exactly_the_images_it_is_told_to(train):
    images = train.images[:8].permute(0, 3, 1, 2).contiguous()
    which = torch.tensor([True, False] * 4)
    out = crop_flip(images, 0, which, torch.Generator().manual_seed(0))
    assert torch.equal(out[which], images[which].flip(-1)) and torch.equal(out[~which], images[~which])


def test_crop_shifts_content_within_padding(train):
    images = train.images[:16].permute(0, 3, 1, 2).contiguous()
    out = crop_flip(images, 2, False, torch.Generator().manual_seed(0))
    for o, img in zip(out, images):
        # the centre 28x28 of the crop is a shifted window of the original by at most 2 pixels
        found = any(torch.equal(o[:, 2:30, 2:30], img[:, 2 + dy:30 + dy, 2 + dx:30 + dx])
                    for dy in range(-2, 3) for dx in range(-2, 3))
        assert found


def test_cutout_zeroes_at_most_a_square(train):
    x = torch.ones(32, 3, 32, 32)
    out = cutout(x, 8, torch.Generator().manual_seed(0))
    zeros = (out == 0).all(1).sum(dim=(1, 2))
    assert (zeros <= 64).all() and (zeros > 0).all()


def test_evaluation_batches_are_in_order_and_complete(synthetic_root):
    test = load_cifar10(synthetic_root, "test", download=False)
    loader = GpuLoader(test, batch_size=30, device="cpu", train=False)
    ys = torch.cat([y for _, y in loader])
    assert torch.equal(ys, test.labels) and len(loader) == 4


# ---- alternating flip ----------------------------------------------------------------------------------------
ALTERNATE = DataConfig(crop_padding=0, flip=True, flip_alternate=True)


def seen_flipped(loader, x):
    """For each output image: (its dataset index, whether it is mirrored), found by nearest match."""
    plain, mirrored = loader.normalize(loader.images).flatten(1), loader.normalize(loader.images.flip(-1)).flatten(1)
    both = torch.cdist(x.flatten(1), torch.cat([plain, mirrored])).argmin(1)
    return both % len(plain), both >= len(plain)


def test_alternating_flip_mirrors_each_image_on_every_other_epoch(train):
    loader = GpuLoader(train, batch_size=len(train.labels), device="cpu", train=True, augment=ALTERNATE, seed=0)
    flips = []
    for _ in range(3):
        (x, _), = list(loader)
        index, flipped = seen_flipped(loader, x)
        state = torch.empty(len(index), dtype=torch.bool)
        state[index] = flipped
        flips.append(state)
        assert torch.equal(state, loader.flip_state)
    assert 0.35 < flips[0].float().mean() < 0.65  # random in the first epoch
    assert torch.equal(flips[1], ~flips[0]) and torch.equal(flips[2], flips[0])


def test_resume_continues_the_augmentation_exactly(train, tmp_path):
    augment = DataConfig(crop_padding=4, flip=True, flip_alternate=True, cutout=8, policy="randaugment")
    make = lambda: GpuLoader(train, batch_size=64, device="cpu", train=True, augment=augment, seed=4)
    straight = make()
    expected = [list(straight) for _ in range(3)][1:]
    first = make()
    list(first)
    torch.save(first.state_dict(), tmp_path / "loader.pt")
    resumed = make()
    resumed.load_state_dict(torch.load(tmp_path / "loader.pt", weights_only=True))
    for epoch in expected:
        for (xa, ya), (xb, yb) in zip(epoch, list(resumed)):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_a_state_without_the_flip_state_is_refused_for_the_alternating_flip(train):
    loader = GpuLoader(train, batch_size=64, device="cpu", train=True, augment=ALTERNATE)
    with pytest.raises(KeyError, match="flip_state"):
        loader.load_state_dict({"generator": loader.generator.get_state()})


def test_epoch_mode_slices_one_shuffled_epoch_whose_labels_follow_their_images(train):
    """data.augment_per: epoch augments the whole shuffled split once, then batches are its slices."""
    augment = DataConfig(crop_padding=0, flip=False, augment_per="epoch")
    loader = GpuLoader(train, batch_size=64, device="cpu", train=True, augment=augment, seed=3, channels_last=True)
    out = list(loader)
    assert len(out) == 400 // 64 and all(x.shape == (64, 3, 32, 32) for x, _ in out)
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in out)
    x, y = torch.cat([x for x, _ in out]), torch.cat([y for _, y in out])
    index = torch.cdist(x.flatten(1), loader.normalize(loader.images).flatten(1)).argmin(1)
    assert torch.equal(loader.labels[index], y) and len(set(index.tolist())) == len(index)  # each image once
    assert not torch.equal(y, torch.cat([y for _, y in list(loader)]))  # the next epoch is shuffled anew
