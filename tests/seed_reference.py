"""The seed notebook's own drawing loop, kept verbatim in behaviour as the tests' reference."""

from __future__ import annotations

import math

import numpy as np

TWO_PI = 2.0 * math.pi


def seed_draw_circle(
    data: np.ndarray,
    xpos: float,
    ypos: float,
    radius: int,
    darkness: float = 0.5,
    width: int = 3,
    dots: int = 500,
) -> None:
    size = data.shape[0]
    for i in range(dots):
        for r in range(radius, radius + width):
            rad = TWO_PI * i / dots
            x = int(round(r * math.cos(rad) + xpos))
            y = int(round(-r * math.sin(rad) + ypos))
            if x >= 0 and x < size and y >= 0 and y < size:
                data[x, y] = data[x, y] - darkness
