import math

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix

from cifar_resnet.config import ConfigError
from cifar_resnet.data import auto_augment
from cifar_resnet.data.auto_augment import BatchedPolicy, OPS, POLICIES
from cifar_resnet.data.cifar10 import load_cifar10
from cifar_resnet.data.gpu_loader import make_policy

REFERENCE = {name: make_policy(name) for name in POLICIES}  # torchvision's own policies


def crafted(n: int, seed: int = 0) -> torch.Tensor:
    """Noise, flat, dark, saturated and gradient images: the edge cases of equalize, autocontrast, solarize."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    dark = torch.randint(0, 3, (1, 3, 32, 32), dtype=torch.uint8, generator=g)
    ramp = torch.arange(32, dtype=torch.uint8).mul(8).expand(1, 3, 32, 32).clone()
    saturated = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 32, 32).clone()
    return torch.cat([noise, flat, dark, ramp, saturated])


@pytest.fixture(scope="module")
def images(synthetic_root):
    train = load_cifar10(synthetic_root, "train", download=False)
    return torch.cat([train.images[:12].permute(0, 3, 1, 2), crafted(8)]).contiguous()


def reference(name: str, image: torch.Tensor, ops: list[tuple[str, float]]) -> torch.Tensor:
    """torchvision's policy `name` applying (operation, magnitude) pairs to one image, as its forward does."""
    policy = REFERENCE[name]
    for op, magnitude in ops:
        image = policy._apply_image_or_video_transform(image, op, magnitude, interpolation=InterpolationMode.NEAREST,
                                                       fill=policy._fill)
    return image


def every_action(policy: BatchedPolicy, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch where image i takes action i (cycling through `images`) in every layer."""
    rows = torch.arange(len(policy.actions))
    return images[rows % len(images)], rows.expand(policy.layers, -1)


@pytest.mark.parametrize("name", POLICIES)
def test_every_action_matches_torchvision_exactly(name, images):
    batch, rows = every_action(BatchedPolicy(name), images)
    # computed for the whole batch and kept where drawn (CUDA's way), and only where drawn (the CPU's)
    masked, indexed = (BatchedPolicy(name, masked=m).apply(batch, rows) for m in (True, False))
    assert masked.dtype == torch.uint8 and masked.shape == batch.shape
    assert torch.equal(masked, indexed)
    policy = BatchedPolicy(name)
    for image, result, row in zip(batch, masked, rows[0].tolist()):
        op = policy.action(row, 32, 32)
        expected = reference(name, image, [op] * policy.layers)
        assert torch.equal(result, expected), f"{name}: {op} differs in {(result != expected).sum()} values"


def test_trivialaugment_matches_torchvision_on_real_images(real_root):
    images = load_cifar10(real_root, "train", download=False).images[:128].permute(0, 3, 1, 2).contiguous()
    policy = BatchedPolicy("trivialaugment")
    rows = policy.sample(len(images), torch.Generator().manual_seed(0))
    out = policy.apply(images, rows)
    for image, result, row in zip(images, out, rows[0].tolist()):
        assert torch.equal(result, reference("trivialaugment", image, [policy.action(row, 32, 32)]))


def test_sequences_of_drawn_operations_match_torchvision(images):
    # RandAugment and AutoAugment chain two operations per image; each image's pair differs
    for name in ("randaugment", "autoaugment"):
        policy = BatchedPolicy(name)
        rows = policy.sample(len(images), torch.Generator().manual_seed(1))
        out = policy.apply(images, rows)
        for i, image in enumerate(images):
            ops = [policy.action(int(r), 32, 32) for r in rows[:, i]]
            assert torch.equal(out[i], reference(name, image, ops)), f"{name}: {ops}"


# ---- single operations with arbitrary per-image parameters --------------------------------------------------
BLENDS = [(auto_augment.brightness, F.adjust_brightness), (auto_augment.saturation, F.adjust_saturation),
          (auto_augment.contrast, F.adjust_contrast), (auto_augment.sharpness, F.adjust_sharpness)]


@pytest.mark.parametrize("ours, theirs", BLENDS, ids=lambda f: getattr(f, "__name__", ""))
def test_blends_with_a_factor_per_image_match_torchvision(ours, theirs, images):
    factors = torch.rand(len(images), generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    out = ours(images, factors)
    for image, result, f in zip(images, out, factors.tolist()):
        assert torch.equal(result, theirs(image, f))


def test_posterize_and_solarize_with_a_parameter_per_image_match_torchvision(images):
    bits = torch.arange(len(images)) % 9
    thresholds = torch.linspace(0, 255, len(images), dtype=torch.float64)
    for image, p, s, b, t in zip(images, auto_augment.posterize(images, bits), auto_augment.solarize(images, thresholds),
                                 bits.tolist(), thresholds.tolist()):
        assert torch.equal(p, F.posterize(image, b))
        assert torch.equal(s, F.solarize(image, t))


def test_affine_with_a_matrix_per_image_matches_torchvision(images):
    g = torch.Generator().manual_seed(3)
    args = [dict(angle=float(torch.rand(1, generator=g)) * 360 - 180, translate=[int(i % 7) - 3, int(i % 5) - 2],
                 scale=1.0, shear=[float(torch.rand(1, generator=g)) * 40 - 20, 0.0]) for i in range(len(images))]
    theta = torch.tensor([_get_inverse_affine_matrix([0.0, 0.0], a["angle"], [float(t) for t in a["translate"]],
                                                     a["scale"], a["shear"]) for a in args]).view(-1, 2, 3)
    out = auto_augment.affine(images, theta)
    for image, result, a in zip(images, out, args):
        assert torch.equal(result, F.affine(image, **a, interpolation=InterpolationMode.NEAREST))


# ---- drawing ----------------------------------------------------------------------------------------------------
def test_each_image_draws_its_own_operation_and_magnitude():
    policy = BatchedPolicy("trivialaugment")
    rows = policy.sample(4096, torch.Generator().manual_seed(0))[0]
    ops = {policy.actions[r][0] for r in rows.tolist()}
    assert ops == set(OPS) - {"Invert"}  # all 14 of TrivialAugmentWide's operations in one batch
    shares = torch.bincount(rows // (2 * policy.bins), minlength=14).float() / len(rows)
    assert (shares - 1 / 14).abs().max() < 0.02  # uniform over operations
    assert {b for _, b, _ in (policy.actions[r] for r in rows.tolist())} == set(range(31))
    assert 0.45 < (rows % 2).float().mean() < 0.55  # signs


def test_autoaugment_applies_each_operation_with_its_probability():
    policy = BatchedPolicy("autoaugment")
    rows = policy.sample(20_000, torch.Generator().manual_seed(0))
    skipped = (rows == len(policy.actions) - 1).float().mean(1)
    expected = 1 - policy.probabilities.mean(0).double()
    assert torch.allclose(skipped.double(), expected, atol=0.02)


def test_drawing_is_reproducible_under_a_seed_and_leaves_the_global_stream(images):
    policy = BatchedPolicy("trivialaugment")
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a = policy(images, torch.Generator().manual_seed(5))
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(a, policy(images, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, policy(images, torch.Generator().manual_seed(6)))


def test_bad_input_is_refused_with_a_message(images):
    for build in (BatchedPolicy, make_policy):
        with pytest.raises(ConfigError, match="unknown policy 'augmix'"):
            build("augmix")
    with pytest.raises(ValueError, match="uint8 images"):
        BatchedPolicy("trivialaugment")(images.float(), torch.Generator())


def test_parameters_follow_torchvision_conventions():
    assert auto_augment.parameters("Posterize", 4.0, 32, 32)[0] == 4.0
    assert auto_augment.parameters("Solarize", 0.5, 32, 32)[0] == 127.5
    assert auto_augment.parameters("Brightness", -0.3, 32, 32)[0] == pytest.approx(0.7)
    matrix = auto_augment.parameters("TranslateX", -3.7, 32, 32)[1]
    assert matrix == pytest.approx([1, 0, 3, 0, 1, 0])  # int() truncates towards zero; inverse shifts back
    assert auto_augment.parameters("Rotate", 90.0, 32, 32)[1] == pytest.approx([0, -1, 0, 1, 0, 0], abs=1e-12)
    assert math.isclose(auto_augment.parameters("Identity", 0.0, 32, 32)[0], 0.0)

