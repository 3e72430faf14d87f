"""Circles hidden in uniform noise, drawn exactly as the seed notebook drew them.

Every image is `image_size` x `image_size` noise, uniform in [0, 1). A ring of `width` pixels is
drawn by stepping `dots` angles around each ring radius and darkening the pixel that each
(angle, radius) pair rounds to. A pixel hit k times is darkened k times, so small circles, whose
dots crowd onto fewer pixels, come out darker. The image is indexed `image[x, y]`: `x` is the
row. The label of a circle is `(x, y, radius + width / 2)`.

The drawing is vectorised over images, angles and ring radii, and runs on whatever device the
images live on. Coordinates are computed in float64 and rounded half-to-even, as Python's
`round` does, so the result equals the seed's pixel loop bit for bit.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CircleConfig", "draw_circles", "make_batch", "random_circles", "validation_set"]


@dataclass(frozen=True)
class CircleConfig:
    """How circles are drawn. The defaults are the seed notebook's.

    Args:
        image_size: side of the square image in pixels.
        min_radius: smallest ring radius drawn (inclusive).
        max_radius: radii are drawn uniformly below this bound (exclusive).
        width: number of concentric one-pixel rings, at radius, radius + 1, ...
        darkness: how much one hit darkens a pixel.
        dots: number of angles sampled around each ring.
    """

    image_size: int = 64
    min_radius: int = 8
    max_radius: int = 32
    width: int = 3
    darkness: float = 0.5
    dots: int = 500

    def __post_init__(self) -> None:
        _check_int("image_size", self.image_size, minimum=1)
        _check_int("min_radius", self.min_radius, minimum=0)
        _check_int("max_radius", self.max_radius, minimum=self.min_radius + 1)
        _check_int("width", self.width, minimum=1)
        _check_int("dots", self.dots, minimum=1)
        if not (isinstance(self.darkness, (int, float)) and math.isfinite(self.darkness)):
            raise ValueError(f"darkness must be a finite number, but got {self.darkness!r}")

    @classmethod
    def seed(cls) -> CircleConfig:
        """The seed notebook's data: 64 x 64 images, radii 8..31, three rings, 500 dots."""
        return cls()


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}")


@functools.lru_cache(maxsize=16)
def _unit_ring(dots: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # The angles are computed with Python's math module, exactly as the seed computes them, so
    # that cos and sin agree with it to the last bit whatever the device's libm does.
    angles = [2.0 * math.pi * i / dots for i in range(dots)]
    cos = torch.tensor([math.cos(a) for a in angles], dtype=torch.float64, device=device)
    sin = torch.tensor([math.sin(a) for a in angles], dtype=torch.float64, device=device)
    return cos, sin


def _darken_bordered(
    canvas: torch.Tensor, circles: torch.Tensor, config: CircleConfig, darkness: float
) -> None:
    """Draw rings onto `canvas`, `(batch, size + 2, size + 2)`, whose one-pixel border is scrap.

    Every hit is clamped to the border, so hits outside the image land on scrap pixels instead
    of being tested and masked: two clamps replace eight comparisons and keep shapes fixed, with
    no host-device sync to count the valid hits.
    """
    batch, bordered = canvas.shape[0], canvas.shape[-1]
    size = bordered - 2
    device = canvas.device
    cos, sin = _unit_ring(config.dots, device)  # (dots,)
    circles = circles.to(device=device, dtype=torch.float64)
    x = circles[:, 0, None, None]  # (batch, 1, 1)
    y = circles[:, 1, None, None]
    rings = torch.arange(config.width, device=device, dtype=torch.float64)
    radii = (circles[:, 2].round()[:, None] + rings)[:, :, None]  # (batch, width, 1)

    # Pixel hit by every (image, ring, dot): float64 and half-to-even, as Python's round.
    px = (radii * cos).add_(x).round_().clamp_(-1, size).add_(1)  # (batch, width, dots)
    py = (radii * sin).neg_().add_(y).round_().clamp_(-1, size).add_(1)
    first = torch.arange(batch, device=device, dtype=torch.float64)[:, None, None]
    flat = px.mul_(bordered).add_(py).add_(first * bordered * bordered).long().view(-1)

    # Adding the same amount once per hit reproduces the seed's repeated subtraction exactly,
    # whatever order the additions land in.
    hits = torch.full((1,), -darkness, device=device, dtype=canvas.dtype).expand(flat.numel())
    canvas.view(-1).scatter_add_(0, flat, hits)


def draw_circles(
    images: torch.Tensor,
    circles: torch.Tensor,
    config: CircleConfig = CircleConfig(),
    darkness: float | None = None,
) -> torch.Tensor:
    """Darken one ring per image, in place, and return `images`.

    Args:
        images: `(batch, size, size)` or `(batch, 1, size, size)` float tensor.
        circles: `(batch, 3)` rows of `(x, y, radius)`; `x` indexes rows, `y` columns. The
            radius is the innermost ring and is rounded half-to-even to an integer; x and y may
            be fractional, as the seed's random centres are.
        config: ring width, dot count and default darkness.
        darkness: amount subtracted per hit; negative values draw a bright ring. Defaults to
            `config.darkness`.
    """
    size = images.shape[-1]
    if images.dim() not in (3, 4) or images.shape[-2] != size:
        raise ValueError(
            f"images must be (batch, size, size) or (batch, 1, size, size), "
            f"but got {tuple(images.shape)}"
        )
    batch = images.shape[0]
    if tuple(circles.shape) != (batch, 3):
        raise ValueError(f"circles must be ({batch}, 3), but got {tuple(circles.shape)}")
    darkness = config.darkness if darkness is None else darkness

    canvas = images.new_zeros(batch, size + 2, size + 2)
    interior = canvas[:, 1:-1, 1:-1]
    interior.copy_(images.view(batch, size, size))
    _darken_bordered(canvas, circles, config, darkness)
    images.view(batch, size, size).copy_(interior)
    return images


def random_circles(
    batch_size: int,
    config: CircleConfig = CircleConfig(),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw `(batch, 3)` float64 rows `(x, y, radius)` with the seed's distribution.

    The radius is `int(u * (max_radius - min_radius) + min_radius)`; x and y are uniform in
    `[0, image_size)`.
    """
    u = torch.rand(batch_size, 3, generator=generator, device=device, dtype=torch.float64)
    span = config.max_radius - config.min_radius
    radius = torch.floor(u[:, 2] * span + config.min_radius)
    centre = u[:, :2] * config.image_size
    return torch.cat([centre, radius[:, None]], dim=1)


def _uniform_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Float32 noise uniform in [0, 1), reproducible from `generator`."""
    if device.type != "cpu":
        return torch.rand(shape, generator=generator, device=device)
    # On the CPU, torch's Mersenne Twister costs more than all the drawing; numpy's PCG64 is
    # about twice as fast. It is seeded from `generator`, so the torch generator's state alone
    # still determines every batch, and checkpointing it is enough to resume the stream.
    seed = int(torch.randint(2**62, (1,), generator=generator).item())
    noise = torch.empty(shape)
    np.random.Generator(np.random.PCG64(seed)).random(out=noise.numpy(), dtype=np.float32)
    return noise


def make_batch(
    batch_size: int,
    config: CircleConfig = CircleConfig(),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random circles on fresh noise, made on `device`.

    Returns:
        `images` of shape `(batch, 1, size, size)`, float32, and `labels` of shape `(batch, 3)`,
        float32 rows `(x, y, radius + width / 2)`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, but got {batch_size!r}")
    size = config.image_size
    # Noise is drawn straight onto a canvas with a scrap border (see _darken_bordered), so the
    # only copy is the final one into a contiguous batch.
    canvas = _uniform_noise((batch_size, size + 2, size + 2), generator, torch.device(device))
    circles = random_circles(batch_size, config, generator, device)
    _darken_bordered(canvas, circles, config, config.darkness)
    images = canvas[:, None, 1:-1, 1:-1].contiguous()  # (batch, 1, size, size)
    labels = circles.clone()
    labels[:, 2] += config.width / 2
    return images, labels.float()


@functools.lru_cache(maxsize=4)
def validation_set(
    config: CircleConfig = CircleConfig(), size: int = 2048, seed: int = 20180118
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed validation images and labels, on the CPU.

    They are always generated on the CPU from `seed`, so every trial on every node and device
    scores on the same images. The tensors are cached and shared: move or copy them, never
    modify them in place.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"validation size must be an integer >= 1, but got {size!r}")
    generator = torch.Generator().manual_seed(seed)
    return make_batch(size, config, generator, device="cpu")
