"""TrivialAugmentWide, RandAugment and AutoAugment (CIFAR-10 policy) on a whole uint8 batch, one draw per image.

torchvision's policies draw one operation per call, so a batch either shares one draw or pays one call per
image. Here every image of a (B, 3, H, W) uint8 batch draws its own operation, magnitude and sign from the
caller's `torch.Generator`, and each operation runs once per batch on the images that drew it. The
operations, magnitude bins and sub-policies are read from torchvision's classes, and each (operation,
signed magnitude) pair a policy can draw is turned once into the parameters torchvision would use
(factor, bits, threshold, inverse affine matrix), so a batch only gathers rows of that table.

Which code does the work:
- torchvision's batched functional ops, called as they are: `autocontrast`, `equalize`, `invert`, the
  grayscale image that saturation and contrast blend towards (`rgb_to_grayscale`) and the blurred image
  that sharpness blends towards (`adjust_sharpness` with factor 0); the inverse matrices come from
  torchvision's `_get_inverse_affine_matrix`.
- written here, because torchvision's functions take one scalar per call: the brightness, saturation
  ("Color"), contrast and sharpness blends with a factor per image, posterize with bits per image,
  solarize with a threshold per image, and one nearest-neighbour `grid_sample` with a matrix per image for
  every shear, translation and rotation (zero fill, torchvision's grid convention).

Agreement with torchvision, checked for every action of every policy in tests/test_policies.py: exact.
The blends reproduce torchvision's rounding too: its kernel computes `a * r + b * (1 - r)` with `1 - r`
as a scalar fused into one multiply-add (x86 and ARM CPUs; on CUDA nvcc contracts it too, not yet checked
on a GPU), here emulated in float64 with a ratio per image. Where torch does not fuse, the two could
differ by one intensity level at rare pixels (a sum within a rounding error of an integer).

On CUDA each operation is computed for the whole batch and kept where an image drew it, so nothing waits
for the device (no host sync per batch); elsewhere only the images that drew an operation are computed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import AutoAugment, AutoAugmentPolicy, RandAugment, TrivialAugmentWide
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix

from ..config import ConfigError, check_value, declared

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
GEOMETRIC = OPS[1:6]
POLICIES = tuple(name for name in declared("data.policy")["choices"] if name != "none")


# ---- operations: uint8 (B, 3, H, W) in and out, one parameter per image ----------------------------------
def _column(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _fused(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """float32 `a + b * alpha` rounded once, as the fused multiply-add in torch's `add(a, b, alpha=...)` kernel
    (see the module's docstring). In float64 the product of two float32 is exact, and so is the sum for
    operands of the size met here (pixel values and factors), so the one rounding is the cast back."""
    return (a.double() + b.double() * alpha.double()).float()


def _blend(images: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's `_blend` (ratio * images + (1 - ratio) * degenerate, truncated) with a ratio per image."""
    ratio, alpha = _column(factor.float()), _column((1.0 - factor).float())  # 1 - r in float64, as torchvision
    return _fused(images.float() * ratio, degenerate, alpha).clamp_(0, 255).to(torch.uint8)


def brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`F.adjust_brightness` with `factor[i]` (float64) for image i."""
    return (images.float() * _column(factor.float())).clamp_(0, 255).to(torch.uint8)


def saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`F.adjust_saturation` (the policies' "Color") with `factor[i]` for image i."""
    return _blend(images, F.rgb_to_grayscale(images).float(), factor)


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`F.adjust_contrast` with `factor[i]` for image i (towards the mean of its uint8 grayscale)."""
    mean = F.rgb_to_grayscale(images).float().mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factor)


def sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`F.adjust_sharpness` with `factor[i]` for image i; the one-pixel border stays as it is."""
    x = images.float()
    blurred = F.adjust_sharpness(images, 0.0).float()  # rounded 3x3 smoothing inside, the border unchanged
    return _fused(x, blurred - x, _column((1.0 - factor).float())).clamp_(0, 255).to(torch.uint8)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """`F.posterize`: keep the `bits[i]` (0-8) most significant bits of image i."""
    mask = (255 << (8 - bits.long().clamp(0, 8))) & 255
    return images & _column(mask.to(torch.uint8))


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """`F.solarize`: invert the pixels of image i at or above `threshold[i]` (compared in float32)."""
    return torch.where(images >= _column(threshold.float()), images.bitwise_not(), images)


def affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """`F.affine` / `F.rotate` with nearest interpolation and zero fill, one inverse matrix per image.

    `theta` (B, 2, 3) float32 holds torchvision's inverse affine matrices (pixel units, origin at the image
    centre, as `_get_inverse_affine_matrix` returns them); the sampling grid is built as torchvision's
    `_affine_grid` builds it, batched.
    """
    b, _, h, w = images.shape
    base = torch.empty(1, h, w, 3, device=images.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=images.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=images.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).clone()  # divided per column by scalars: no host-to-device copy
    scaled[..., 0] /= 0.5 * w
    scaled[..., 1] /= 0.5 * h
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(scaled).view(b, h, w, 2)
    out = nnf.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.to(torch.uint8)


_PIXEL_OPS = {"Brightness": brightness, "Color": saturation, "Contrast": contrast, "Sharpness": sharpness,
              "Posterize": posterize, "Solarize": solarize,
              "AutoContrast": lambda images, _: F.autocontrast(images),
              "Equalize": lambda images, _: F.equalize(images),
              "Invert": lambda images, _: F.invert(images)}


def parameters(op: str, magnitude: float, height: int, width: int) -> tuple[float, list[float]]:
    """(value, inverse affine matrix) that torchvision's policies derive from a signed `magnitude` for `op`.

    The value is the factor of the blends and of brightness, the bits of posterize and the threshold of
    solarize (0 otherwise); the matrix is the identity for non-geometric operations. Mirrors
    `_AutoAugmentBase._apply_image_or_video_transform`, `F.affine_image` and `F.rotate_image`.
    """
    matrix = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if op in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        corner = [-width * 0.5, -height * 0.5]  # center=[0, 0], the top-left corner, in centred coordinates
        matrix = _get_inverse_affine_matrix(corner, 0.0, [0.0, 0.0], 1.0, [shear, 0.0] if op == "ShearX" else [0.0, shear])
    elif op in ("TranslateX", "TranslateY"):
        shift = [float(int(magnitude)), 0.0] if op == "TranslateX" else [0.0, float(int(magnitude))]
        matrix = _get_inverse_affine_matrix([0.0, 0.0], 0.0, shift, 1.0, [0.0, 0.0])
    elif op == "Rotate":
        matrix = _get_inverse_affine_matrix([0.0, 0.0], -(magnitude % 360), [0.0, 0.0], 1.0, [0.0, 0.0])
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 1.0 + magnitude, matrix
    if op == "Posterize":
        return float(int(magnitude)), matrix
    if op == "Solarize":
        return 255.0 * magnitude, matrix
    return 0.0, matrix


# ---- policies ---------------------------------------------------------------------------------------------
class BatchedPolicy:
    """torchvision's `name` policy on uint8 (B, 3, H, W) batches, every image drawing its own operations.

    - "trivialaugment": `TrivialAugmentWide()`: one of 14 operations, one of 31 magnitude bins, random sign.
    - "randaugment": `RandAugment()`: 2 operations in sequence, each one of 14 at bin 9 of 31, random sign.
    - "autoaugment": `AutoAugment(AutoAugmentPolicy.CIFAR10)`: one of 25 sub-policies; each of its two
      operations is applied with its probability, at its magnitude (bins of 10), with a random sign.

    A draw is a row of `actions` (operation, magnitude bin, negated); `sample` returns (layers, B) row
    indices, `apply` runs them, and calling the policy does both. `masked` (default: on CUDA) computes each
    operation for the whole batch and keeps it where drawn, which avoids a host sync per operation.
    Operations, bins and sub-policies are read from torchvision's classes (`_AUGMENTATION_SPACE`,
    `_policies`: private attributes, so tests/test_policies.py checks every action against torchvision).
    """

    def __init__(self, name: str, *, masked: bool | None = None) -> None:
        if name not in POLICIES:
            check_value("data.policy", name)
            raise ConfigError("data.policy: none is no policy to batch (make_policy returns None for it)")
        self.name, self.masked = name, masked
        # each action is (operation, magnitude bin or None, negated?)
        if name == "trivialaugment":
            self.space, self.bins, self.layers = TrivialAugmentWide._AUGMENTATION_SPACE, 31, 1
            self.actions = [(op, b, neg) for op in self.space for b in range(self.bins) for neg in (False, True)]
        elif name == "randaugment":
            policy = RandAugment()
            self.space, self.bins, self.layers = RandAugment._AUGMENTATION_SPACE, policy.num_magnitude_bins, policy.num_ops
            self.actions = [(op, policy.magnitude, neg) for op in self.space for neg in (False, True)]
        else:
            subpolicies = AutoAugment(AutoAugmentPolicy.CIFAR10)._policies
            self.space, self.bins, self.layers = AutoAugment._AUGMENTATION_SPACE, 10, 2
            self.actions = [(op, b, neg) for pair in subpolicies for op, _, b in pair for neg in (False, True)]
            self.actions.append(("Identity", None, False))  # a sub-policy operation that was not applied
            self.probabilities = torch.tensor([[p for _, p, _ in pair] for pair in subpolicies])
        self.ops = {op for op, _, _ in self.actions}
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # per image size, device
        self._probabilities: dict[torch.device, torch.Tensor] = {}  # copied to each device once, not per batch

    def action(self, row: int, height: int, width: int) -> tuple[str, float]:
        """(operation, signed magnitude) of action `row` for images of this size, as torchvision passes them
        to `_apply_image_or_video_transform` (0.0 for operations without magnitudes)."""
        op, b, negative = self.actions[row]
        magnitudes_fn, signed = self.space.get(op, (lambda *_: None, False))
        magnitudes = magnitudes_fn(self.bins, height, width)
        if magnitudes is None or b is None:
            return op, 0.0
        magnitude = float(magnitudes[b])
        return op, -magnitude if signed and negative else magnitude

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.sample(len(images), generator))

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(layers, batch) int64 rows of `actions`, drawn on the generator's device."""
        kw = {"device": generator.device, "generator": generator}
        negative = lambda: (torch.rand(batch, **kw) < 0.5).long()
        if self.name == "trivialaugment":
            op, b = torch.randint(len(self.space), (batch,), **kw), torch.randint(self.bins, (batch,), **kw)
            return ((op * self.bins + b) * 2 + negative())[None]
        if self.name == "randaugment":
            return torch.stack([torch.randint(len(self.space), (batch,), **kw) * 2 + negative() for _ in range(self.layers)])
        sub = torch.randint(len(self.probabilities), (batch,), **kw)
        if generator.device not in self._probabilities:
            self._probabilities[generator.device] = self.probabilities.to(generator.device)
        probabilities = self._probabilities[generator.device][sub]
        rows = []
        for position in range(2):
            applied = torch.rand(batch, **kw) <= probabilities[:, position]
            rows.append(torch.where(applied, (sub * 2 + position) * 2 + negative(), len(self.actions) - 1))
        return torch.stack(rows)

    def apply(self, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Run the drawn `rows` (layers, B) on uint8 `images` (B, 3, H, W), layer after layer."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        op_table, value_table, theta_table = self._table(images)
        masked = images.is_cuda if self.masked is None else self.masked
        run = _masked if masked else _indexed
        for row in rows.to(images.device):
            op, value, theta = op_table[row], value_table[row], theta_table[row]
            images = images if masked else images.clone()  # the indexed path writes into it
            if self.ops & set(GEOMETRIC):
                images = run(images, (op >= OPS.index(GEOMETRIC[0])) & (op <= OPS.index(GEOMETRIC[-1])), affine, theta)
            for name, fn in _PIXEL_OPS.items():
                if name in self.ops:
                    images = run(images, op == OPS.index(name), fn, value)
        return images

    def _table(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each action's operation index, value and inverse matrix, for this image size, on this device."""
        _, _, h, w = images.shape
        key = (h, w, images.device)
        if key not in self._tables:
            params = [parameters(*self.action(row, h, w), h, w) for row in range(len(self.actions))]
            self._tables[key] = (torch.tensor([OPS.index(op) for op, _, _ in self.actions], device=images.device),
                                 torch.tensor([v for v, _ in params], dtype=torch.float64, device=images.device),
                                 torch.tensor([m for _, m in params], dtype=torch.float32, device=images.device).view(-1, 2, 3))
        return self._tables[key]


def _masked(images: torch.Tensor, chosen: torch.Tensor, fn, param: torch.Tensor) -> torch.Tensor:
    """`fn` on the whole batch, kept where `chosen`: no host sync (CUDA)."""
    return torch.where(_column(chosen), fn(images, param), images)


def _indexed(images: torch.Tensor, chosen: torch.Tensor, fn, param: torch.Tensor) -> torch.Tensor:
    """`fn` on the chosen images only, written into `images` (CPU: the least work)."""
    index = chosen.nonzero().squeeze(1)
    if len(index):
        images[index] = fn(images[index], param[index])
    return images
