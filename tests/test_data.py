import math
import random

import numpy as np
import pytest
import torch

from data import (
    CircleConfig,
    disc_iou,
    draw_circles,
    make_batch,
    random_circles,
    rmse,
    validation_set,
)
from tests.seed_reference import seed_draw_circle


def _random_seed_circles(count: int, rng: random.Random, size: int = 64) -> list[tuple]:
    circles = []
    for i in range(count):
        radius = int(rng.random() * (size / 2 - size // 8) + size // 8)
        x, y = rng.random() * size, rng.random() * size
        if i % 5 == 1:  # centre near or past an edge: the ring crosses the border
            x = rng.choice([-1, 1]) * rng.random() * 6 + rng.choice([0, size])
        if i % 7 == 2:  # the smallest rings, whose dots pile onto the same pixels
            radius = size // 8
        circles.append((x, y, radius))
    return circles


@pytest.mark.parametrize("seed", [0, 1])
def test_drawing_matches_seed_loop_pixel_for_pixel(seed):
    rng = random.Random(seed)
    circles = _random_seed_circles(200, rng)
    noise = torch.rand(len(circles), 64, 64, generator=torch.Generator().manual_seed(seed))

    expected = noise.numpy().copy()
    for image, (x, y, radius) in zip(expected, circles, strict=True):
        seed_draw_circle(image, x, y, radius)
    drawn = draw_circles(noise.clone(), torch.tensor(circles, dtype=torch.float64))

    np.testing.assert_array_equal(drawn.numpy(), expected)
    # The reference really did cross borders and stack dots, or the test proves little.
    assert (expected < -0.6).any(), "no pixel was hit more than once"
    assert any(x < 0 or x >= 64 for x, _, _ in circles)


def test_drawing_accepts_channel_dim_and_bright_rings():
    images = torch.full((2, 1, 64, 64), 0.5)
    circles = torch.tensor([[32.0, 32.0, 10.0], [5.0, 60.0, 20.0]])
    expected = images.numpy().copy()
    for image, (x, y, r) in zip(expected[:, 0], circles.tolist(), strict=True):
        seed_draw_circle(image, x, y, int(r), darkness=-0.5)
    draw_circles(images, circles, darkness=-0.5)
    np.testing.assert_array_equal(images.numpy(), expected)
    assert images.max() > 0.5


def test_make_batch_shapes_and_seed_label_convention():
    config = CircleConfig()
    generator = torch.Generator().manual_seed(3)
    images, labels = make_batch(16, config, generator)
    assert images.shape == (16, 1, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (16, 3) and labels.dtype == torch.float32

    # The seed's label is (x, y, radius + width / 2) with an integer radius in [8, 32).
    radius = labels[:, 2] - config.width / 2
    assert torch.all(radius == radius.round())
    assert radius.min() >= 8 and radius.max() <= 31
    assert labels[:, :2].min() >= 0 and labels[:, :2].max() < 64


def test_make_batch_draws_the_labelled_circle():
    images, labels = make_batch(8, generator=torch.Generator().manual_seed(5))
    # Undo the drawing of the labelled circle: what is left must be noise in [0, 1).
    circles = labels.double().clone()
    circles[:, 2] -= 1.5
    restored = draw_circles(images.clone(), circles, darkness=-0.5)
    assert restored.min() >= 0 and restored.max() < 1
    assert images.min() < 0  # the rings were really drawn


def test_same_seed_same_batch():
    a = make_batch(32, generator=torch.Generator().manual_seed(11))
    b = make_batch(32, generator=torch.Generator().manual_seed(11))
    c = make_batch(32, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # A generator's stream moves on: its next batch is a new one.
    generator = torch.Generator().manual_seed(11)
    make_batch(32, generator=generator)
    assert not torch.equal(make_batch(32, generator=generator)[0], a[0])


def test_radius_distribution_covers_the_seed_range():
    circles = random_circles(20_000, generator=torch.Generator().manual_seed(0))
    assert set(circles[:, 2].long().unique().tolist()) == set(range(8, 32))


def test_validation_set_is_fixed():
    images, labels = validation_set(CircleConfig(), 64)
    validation_set.cache_clear()
    images2, labels2 = validation_set(CircleConfig(), 64)
    assert torch.equal(images, images2) and torch.equal(labels, labels2)
    assert images.device.type == "cpu"


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_size", 0), ("max_radius", 8), ("width", 0), ("dots", 1.5), ("darkness", math.nan)],
)
def test_circle_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        CircleConfig(**{field: value})


def test_iou_identical_disjoint_and_nested():
    a = torch.tensor([[10.0, 10.0, 5.0], [10.0, 10.0, 5.0], [30.0, 30.0, 10.0]])
    b = torch.tensor([[10.0, 10.0, 5.0], [40.0, 10.0, 5.0], [32.0, 29.0, 4.0]])
    iou = disc_iou(a, b)
    assert iou[0].item() == pytest.approx(1.0)
    assert iou[1].item() == 0.0
    assert iou[2].item() == pytest.approx(16 / 100)


def test_iou_of_crossing_discs_matches_monte_carlo():
    a = torch.tensor([[0.0, 0.0, 3.0]])
    b = torch.tensor([[4.0, 1.0, 2.5]])
    points = torch.rand(400_000, 2, generator=torch.Generator().manual_seed(0)) * 14 - 4
    in_a = (points - a[0, :2]).norm(dim=1) <= 3.0
    in_b = (points - b[0, :2]).norm(dim=1) <= 2.5
    estimate = (in_a & in_b).sum() / (in_a | in_b).sum()
    assert 0 < estimate < 1
    assert disc_iou(a, b).item() == pytest.approx(estimate.item(), abs=0.01)


def test_rmse_per_output():
    labels = torch.zeros(4, 3)
    predictions = torch.tensor([[3.0, 0.0, 1.0]] * 4)
    errors = rmse(predictions, labels)
    assert errors["rmse_x"] == pytest.approx(3.0)
    assert errors["rmse_y"] == 0.0
    assert errors["rmse_r"] == pytest.approx(1.0)
    assert errors["rmse"] == pytest.approx(math.sqrt(10 / 3))


@pytest.mark.parametrize(
    ("size", "dots", "darkness", "dtype"),
    [(33, 500, 0.5, torch.float32), (7, 13, 0.25, torch.float32), (64, 500, 0.5, torch.float64)],
)
def test_drawing_matches_seed_loop_on_ties_odd_sizes_and_other_settings(
    size, dots, darkness, dtype
):
    config = CircleConfig(image_size=size, min_radius=0, max_radius=size, dots=dots)
    rng = random.Random(size)
    # Half-integer centres put many coordinates exactly on a rounding tie; radius 0 draws dots.
    circles = [
        (rng.randrange(-4, 2 * size) / 2, rng.randrange(-4, 2 * size) / 2, r)
        for r in (0, 1, 2, size // 3, size // 2, size)
    ]
    noise = torch.rand(len(circles), size, size, generator=torch.Generator().manual_seed(1))
    noise = noise.to(dtype)
    expected = noise.numpy().copy()
    for image, (x, y, radius) in zip(expected, circles, strict=True):
        seed_draw_circle(image, x, y, radius, darkness, config.width, dots)
    drawn = draw_circles(
        noise.clone(), torch.tensor(circles, dtype=torch.float64), config, darkness
    )
    np.testing.assert_array_equal(drawn.numpy(), expected)
