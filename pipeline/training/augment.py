"""Batched data augmentation on 0..1 images: small rotations and scaling, gamma, contrast and
noise, bias field, organ contrast. No flips: left/right anatomy (liver on the patient's right)
must not change."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def random_affine(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    gen: torch.Generator,
    *,
    max_degrees: float = 10.0,
    scale: tuple[float, float] = (0.85, 1.2),
    translate: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotate, scale and shift each image of a (batch, 1, H, W) tensor (and its mask) at random.

    Masks are resampled bilinearly and thresholded at 0.5.
    """
    n = images.shape[0]
    angle = _uniform(n, -max_degrees, max_degrees, gen) * (math.pi / 180.0)
    zoom = torch.exp(_uniform(n, math.log(scale[0]), math.log(scale[1]), gen))
    shift = _uniform(2 * n, -translate, translate, gen).view(n, 2) * 2.0
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out_mask = None
    if masks is not None:
        warped = F.grid_sample(masks, grid, mode="bilinear", align_corners=False)
        out_mask = (warped > 0.5).to(masks.dtype)
    return out, out_mask


def random_intensity(
    images: torch.Tensor,
    gen: torch.Generator,
    *,
    gamma: tuple[float, float] = (0.7, 1.5),
    contrast: tuple[float, float] = (0.85, 1.15),
    brightness: float = 0.05,
    noise: float = 0.03,
) -> torch.Tensor:
    """Random gamma, contrast, brightness and Gaussian noise per image; result clipped to 0..1."""
    n = images.shape[0]
    shape = (n, 1, 1, 1)
    g = torch.exp(_uniform(n, math.log(gamma[0]), math.log(gamma[1]), gen)).view(shape)
    c = _uniform(n, contrast[0], contrast[1], gen).view(shape)
    b = _uniform(n, -brightness, brightness, gen).view(shape)
    sd = _uniform(n, 0.0, noise, gen).view(shape)
    g, c, b, sd = (t.to(images.device, images.dtype) for t in (g, c, b, sd))
    out = images.clamp(0.0, 1.0).pow(g) * c + b
    eps = torch.randn(images.shape, generator=gen).to(images.device, images.dtype)
    return (out + sd * eps).clamp_(0.0, 1.0)


def random_bias_field(
    images: torch.Tensor, gen: torch.Generator, *, strength: float = 0.3
) -> torch.Tensor:
    """Multiply each image by a smooth random field (MR coil shading, "bias field"): the
    exponential of a random polynomial of degree 2 in the image coordinates whose values stay
    within +-``strength`` (log scale); result clipped to 0..1. The same field for every channel."""
    n, _, h, w = images.shape
    y = torch.linspace(-1.0, 1.0, h).view(1, h, 1)
    x = torch.linspace(-1.0, 1.0, w).view(1, 1, w)
    terms = torch.stack(
        [
            x.expand(1, h, w),
            y.expand(1, h, w),
            (x * y),
            x.expand(1, h, w) ** 2,
            y.expand(1, h, w) ** 2,
        ]
    ).squeeze(1)  # (5, h, w)
    coeffs = _uniform(n * 5, -1.0, 1.0, gen).view(n, 5, 1, 1)
    log_field = (coeffs * terms.unsqueeze(0)).sum(dim=1, keepdim=True)  # (n, 1, h, w)
    peak = log_field.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    scale = _uniform(n, 0.0, strength, gen).view(n, 1, 1, 1)
    field = torch.exp(log_field / peak * scale).to(images.device, images.dtype)
    return (images * field).clamp_(0.0, 1.0)


#: the range of random_organ_contrast's factor (docs/benchmarks.md: 0.35-1.3 and 0.25-1.3 tried)
ORGAN_CONTRAST_FACTOR = (0.25, 1.3)


def random_organ_contrast(
    images: torch.Tensor,
    masks: torch.Tensor,
    gen: torch.Generator,
    *,
    factor: tuple[float, float] = ORGAN_CONTRAST_FACTOR,
    p: float = 0.5,
    edge: int = 5,
) -> torch.Tensor:
    """Scale the intensity of the labelled organ alone, for a random half of the images.

    Real livers differ from one another in their T2 signal relative to their surroundings far
    more than a global gamma or contrast change can imitate (iron overload, steatosis,
    fibrosis, coil and sequence differences darken or brighten the liver alone). Each chosen
    image's organ is multiplied by a factor drawn log-uniformly from ``factor``, blended across
    a soft edge ``edge`` pixels wide so that the network cannot learn the edge itself; result
    clipped to 0..1. ``masks`` are (batch, 1, H, W) in 0..1, aligned with ``images`` (apply
    after the geometric augmentation).
    """
    n = images.shape[0]
    chosen = (torch.rand(n, generator=gen) < p).to(images.dtype).view(n, 1, 1, 1)
    log_f = _uniform(n, math.log(factor[0]), math.log(factor[1]), gen).view(n, 1, 1, 1)
    scale = torch.exp(log_f).to(images.dtype)
    kernel = 2 * edge + 1
    soft = F.avg_pool2d(masks.to(images.dtype), kernel, stride=1, padding=edge)
    soft = (soft * masks.to(images.dtype)).clamp(0.0, 1.0)  # fade inside the outline only
    weight = (soft * chosen).to(images.device)
    gain = 1.0 + weight * (scale.to(images.device) - 1.0)
    # every channel (2.5D context) gets the same gain: the mask is the centre slice's, close
    # enough for the neighbours 7-8 mm away
    return (images * gain).clamp_(0.0, 1.0)
