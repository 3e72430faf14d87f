"""Circles hidden in uniform noise, drawn exactly as the seed notebook drew them.

Every image is `image_size` x `image_size` noise, uniform in [0, 1). A ring of `width` pixels is
drawn by stepping `dots` angles around each ring radius and darkening the pixel that each
(angle, radius) pair rounds to. A pixel hit k times is darkened k times, so small circles, whose
dots crowd onto fewer pixels, come out darker. The image is indexed `image[x, y]`: `x` is the
row. The label of a circle is `(x, y, radius + width / 2)`.

The drawing is vectorised over images, angles and ring radii, and runs on whatever device the
images live on. Coordinates are computed in float64 and rounded half-to-even, as Python's
`round` does, so the result equals the seed's pixel loop bit for bit. Batches are reproducible
from a `torch.Generator` alone: on the CPU, where numpy draws the noise faster than torch, its
bit generator is seeded from the torch generator for every batch.
"""

from __future__ import annotations

import functools
import math
import threading
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


# Noise is drawn as 24 random bits k per pixel: k * 2**-24 is the float32 uniform in [0, 1) that
# torch.rand and numpy draw. make_batch draws rings on k itself, exact in float32, with every hit
# scaled by 2**24 as well, and scales back in the copy out of the canvas: float32 arithmetic
# commutes exactly with scaling by a power of two while nothing overflows, so the result is the
# seed's to the bit and the noise needs no scaling pass of its own.
_NOISE_BITS = 24
_NOISE_SCALE = 2.0**_NOISE_BITS

# On the CPU, the float64 work of drawing is done for a few images at a time, about this many
# bytes of it per pass, so that each step finds the previous step's output still in the core's
# own cache (1-2 MiB of L2 on current x86 servers) instead of in main memory.
_PASS_BYTES = 1 << 19


@functools.lru_cache(maxsize=16)
def _unit_ring(dots: int, device: torch.device) -> torch.Tensor:
    """`(2, 1, 1, dots)` float64: cos and -sin of the seed's angles, in that order."""
    # The angles are computed with Python's math module, exactly as the seed computes them, so
    # that cos and sin agree with it to the last bit whatever the device's libm does. Negating
    # sin is exact, and r * (-sin) equals the seed's -r * sin bit for bit.
    angles = [2.0 * math.pi * i / dots for i in range(dots)]
    ring = [[math.cos(a) for a in angles], [-math.sin(a) for a in angles]]
    return torch.tensor(ring, dtype=torch.float64, device=device)[:, None, None, :]


@functools.lru_cache(maxsize=16)
def _ring_steps(width: int, device: torch.device) -> torch.Tensor:
    return torch.arange(width, dtype=torch.float64, device=device)[:, None]  # (width, 1)


@functools.lru_cache(maxsize=16)
def _random_scale(config: CircleConfig, device: torch.device) -> torch.Tensor:
    span = config.max_radius - config.min_radius
    scale = torch.tensor([config.image_size, config.image_size, span], dtype=torch.float64)
    return scale.to(device)


@functools.lru_cache(maxsize=16)
def _label_shift(config: CircleConfig, device: torch.device) -> torch.Tensor:
    return torch.tensor([0.0, 0.0, config.width / 2], dtype=torch.float64).to(device)


def _canvas_shape(batch: int, size: int) -> tuple[int, int, int]:
    """`(batch, size + 2, stride)`: the image with a one-pixel scrap border on every side.

    The row stride is even (one more scrap column when size is odd) because the rounding trick
    in _darken_bordered needs an even multiple of it.
    """
    return batch, size + 2, size + 2 + size % 2


@functools.lru_cache(maxsize=64)
def _row_offsets(
    batch: int, rows: int, stride: int, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Per-image row offsets with a large constant folded in, and that constant's int64 bits.

    `stride * offsets` lies in [2**52, 2**53), where float64 has a spacing of exactly 1, for
    every canvas row of every image; see _darken_bordered for how that rounds y.
    """
    big = round(1.5 * 2.0**52 / stride)
    offsets = torch.arange(batch, dtype=torch.float64) * rows + (big + 1)
    base = torch.tensor(float(big * stride), dtype=torch.float64).view(torch.int64).item() - 1
    return offsets.to(device)[:, None, None], base  # (batch, 1, 1), int


@functools.lru_cache(maxsize=8)
def _cpu_hits(count: int, amount: float, dtype: torch.dtype) -> torch.Tensor:
    # scatter_add_ reads a contiguous source noticeably faster than an expanded scalar.
    return torch.full((count,), amount, dtype=dtype)


def _darken_bordered(
    canvas: torch.Tensor, radii: torch.Tensor, centres: torch.Tensor, dots: int, amount: float
) -> None:
    """Add `amount` to `canvas` at every hit of every ring.

    Args:
        canvas: contiguous `(batch, size + 2, stride)`, from _canvas_shape.
        radii: `(batch, width, 1)` float64 integer radius of every ring.
        centres: `(2, batch, 1, 1)` float64 x and y of every centre.
        dots: angles per ring.
        amount: added once per hit.

    Every hit is clamped to the canvas's one-pixel border, so hits outside the image land on
    scrap pixels instead of being tested and masked: one clamp replaces eight comparisons and
    keeps shapes fixed, with no host-device sync to count the valid hits.
    """
    batch, rows, stride = canvas.shape
    if batch == 0:
        return
    size = rows - 2
    device = canvas.device
    width = radii.shape[1]
    if device.type == "cpu":
        per_image = width * dots * (16 + canvas.element_size())  # float64 x and y, and a hit
        passes = -(-batch // max(1, _PASS_BYTES // per_image))
        per_pass = -(-batch // passes)  # as even as can be, so that few passes are partial
        hits = _cpu_hits(per_pass * width * dots, amount, canvas.dtype)
    else:
        per_pass = batch
        hits = torch.full((1,), amount, dtype=canvas.dtype, device=device)
        hits = hits.expand(batch * width * dots)

    # One float64 buffer for every pass, so that each pass finds it in cache. Its views are made
    # once, not per pass: a pass over a few images is short enough for every call in it to show.
    xy = torch.empty(2, per_pass, width, dots, dtype=torch.float64, device=device)
    offsets, base = _row_offsets(per_pass, rows, stride, device)

    def views(count: int) -> tuple[torch.Tensor, ...]:
        part = xy[:, :count]
        x, y = part.unbind()
        index = x.view(torch.int64).view(-1)  # x's bits, once x holds exact integers
        return part, x, y, index, offsets[:count], hits[: len(index)]

    full = views(per_pass)
    ring = _unit_ring(dots, device)  # (2, 1, 1, dots)
    flat_canvas = canvas.view(-1)
    pieces = zip(radii.split(per_pass), centres.split(per_pass, 1), strict=True)
    for step, (part_radii, part_centres) in enumerate(pieces):
        count = len(part_radii)
        part, x, y, index, part_offsets, part_hits = full if count == per_pass else views(count)

        # Every (image, ring, dot) in float64, as the seed: x = r cos + x0, y = r (-sin) + y0.
        torch.mul(part_radii, ring, out=part)
        part += part_centres
        # Clamping before rounding is the same as after: every value beyond the image rounds to
        # a pixel beyond it, and -1 and size are both border.
        part.clamp_(-1, size)

        # Round half to even as Python's round. x is rounded by round_, then moved to its canvas
        # row plus a large constant. For y there is no separate pass: y + stride * x lies in
        # [2**52, 2**53), where float64 numbers are exactly the integers, so the addition itself
        # rounds y half to even; stride * x is an even integer and does not change which way
        # ties go.
        x.round_()
        x += part_offsets
        torch.add(y, x, alpha=stride, out=x)  # exact integers, over x's memory

        # In that range a float64's bits are its value plus a constant, so the index into the
        # canvas is one integer subtraction away, without a float-to-int conversion pass.
        index.sub_(base - step * per_pass * rows * stride)

        # Adding the same amount once per hit reproduces the seed's repeated subtraction
        # exactly, whatever order the additions land in.
        flat_canvas.scatter_add_(0, index, part_hits)


def _ring_geometry(
    circles: torch.Tensor, config: CircleConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(batch, width, 1)` ring radii and `(2, batch, 1, 1)` centres, float64 on `device`."""
    circles = circles.to(device=device, dtype=torch.float64)
    radii = circles[:, 2, None, None].round() + _ring_steps(config.width, device)
    return radii, circles.T[:2, :, None, None]


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

    canvas = images.new_zeros(_canvas_shape(batch, size))
    interior = canvas[:, 1 : size + 1, 1 : size + 1]
    interior.copy_(images.view(batch, size, size))
    radii, centres = _ring_geometry(circles, config, images.device)
    _darken_bordered(canvas, radii, centres, config.dots, -darkness)
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
    circles = torch.rand(batch_size, 3, generator=generator, device=device, dtype=torch.float64)
    circles.mul_(_random_scale(config, torch.device(device)))
    circles[:, 2].add_(config.min_radius).floor_()
    return circles


# One numpy bit generator per thread, re-seeded for every batch (see _seeded_bit_generator).
_threads = threading.local()


def _seeded_bit_generator(generator: torch.Generator | None) -> np.random.SFC64:
    """This thread's SFC64, its whole state drawn from `generator`.

    The torch generator's state alone still determines every batch, so checkpointing it is
    enough to resume the stream. Setting the state of a kept bit generator costs a fraction of
    building one from a seed, whose hashing otherwise shows in the time of a batch of 64.
    """
    words = torch.randint(-(2**63), 2**63 - 1, (4,), generator=generator).numpy()
    state = words.view(np.uint64)
    state[3] = 1  # SFC64's counter; any a, b, c and counter make a valid state
    bit_generator = getattr(_threads, "bit_generator", None)
    if bit_generator is None:
        bit_generator = _threads.bit_generator = np.random.SFC64()
    bit_generator.state = {
        "bit_generator": "SFC64",
        "state": {"state": state},
        "has_uint32": 0,
        "uinteger": 0,
    }
    return bit_generator


def _cpu_noise_bits(bit_generator: np.random.SFC64, shape: tuple[int, ...]) -> torch.Tensor:
    """Float32 integers uniform in [0, 2**24), drawn from `bit_generator` into fresh memory."""
    count = math.prod(shape)
    # numpy's raw 64-bit words are the cheapest random bits on a CPU: torch's Mersenne Twister
    # costs about twice as much, and numpy's own float32 draws half as much again.
    words = bit_generator.random_raw((count + 1) // 2).view(np.int32)[:count]
    bits = torch.from_numpy(words).bitwise_and_(2**_NOISE_BITS - 1)
    # Converted in place, so that the noise stays in the memory the bits were just written to.
    return bits.view(torch.float32).copy_(bits).view(shape)


@functools.lru_cache(maxsize=16)
def _scaled_hit(darkness: float, hits_per_circle: int) -> tuple[float, float]:
    """The amount added per hit to a canvas holding noise times `scale`, and that scale.

    Only a darkness so large that a scaled pixel could come near float32's overflow (beyond
    2**100 / hits_per_circle, about 8e26 for the seed's rings) is drawn on unscaled noise; see
    _NOISE_SCALE.
    """
    hit = float(np.float32(-darkness))  # what the seed subtracts from float32 pixels
    scale = _NOISE_SCALE if abs(hit) * hits_per_circle < 2.0**100 else 1.0
    return hit * scale, scale


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
    device = torch.device(device)
    size = config.image_size

    # The small steps come first, together: after the drawing has streamed through the cache,
    # each small step would cost several times more.
    circles = random_circles(batch_size, config, generator, device)
    labels = (circles + _label_shift(config, device)).float()  # radius to the rings' middle
    radii = circles[:, 2, None, None] + _ring_steps(config.width, device)  # whole already
    centres = circles.T[:2, :, None, None]  # (2, batch, 1, 1)
    hit, scale = _scaled_hit(config.darkness, config.width * config.dots)
    images = torch.empty(batch_size, 1, size, size, device=device)

    # Noise is drawn straight onto a canvas with a scrap border (see _darken_bordered), so the only
    # copy is the one into the contiguous batch, which also undoes the scale.
    shape = _canvas_shape(batch_size, size)
    if device.type == "cpu":
        canvas = _cpu_noise_bits(_seeded_bit_generator(generator), shape)
    else:
        canvas = torch.randint(
            2**_NOISE_BITS, shape, generator=generator, device=device, dtype=torch.float32
        )
    if scale != _NOISE_SCALE:
        canvas.mul_(scale / _NOISE_SCALE)
    _darken_bordered(canvas, radii, centres, config.dots, hit)
    torch.mul(canvas[:, None, 1 : size + 1, 1 : size + 1], 1.0 / scale, out=images)
    return images, labels


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
