"""Validation metrics in pixels: per-output RMSE and the exact IoU of two discs."""

from __future__ import annotations

import math

import torch

__all__ = ["disc_iou", "rmse"]


def rmse(predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Root mean squared error over x, y and r together, and for each one.

    Args:
        predictions, labels: `(batch, 3)` rows `(x, y, r)`.

    Returns:
        `{"rmse": ..., "rmse_x": ..., "rmse_y": ..., "rmse_r": ...}` as floats.
    """
    squared = (predictions.double() - labels.double()) ** 2  # (batch, 3)
    per_output = squared.mean(dim=0).sqrt()
    overall = squared.mean().sqrt()
    values = torch.cat([overall[None], per_output]).tolist()
    return dict(zip(("rmse", "rmse_x", "rmse_y", "rmse_r"), values, strict=True))


def disc_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of discs `a` and `b`, each `(batch, 3)` rows `(x, y, r)`.

    Exact: the intersection is the area of the lens two circles cut from each other. A negative
    radius counts as an empty disc; two empty discs have IoU 0.
    """
    a, b = a.double(), b.double()
    r1, r2 = a[:, 2].clamp(min=0), b[:, 2].clamp(min=0)
    d = torch.linalg.vector_norm(a[:, :2] - b[:, :2], dim=1)

    # Lens area where the circles cross; the clamps only guard the branches not taken.
    safe_d = d.clamp(min=1e-12)
    cos1 = ((d**2 + r1**2 - r2**2) / (2 * safe_d * r1.clamp(min=1e-12))).clamp(-1, 1)
    cos2 = ((d**2 + r2**2 - r1**2) / (2 * safe_d * r2.clamp(min=1e-12))).clamp(-1, 1)
    kite = (-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2)
    lens = r1**2 * torch.acos(cos1) + r2**2 * torch.acos(cos2) - 0.5 * kite.clamp(min=0).sqrt()

    inner = math.pi * torch.minimum(r1, r2) ** 2
    intersection = torch.where(
        d >= r1 + r2, torch.zeros_like(d), torch.where(d <= (r1 - r2).abs(), inner, lens)
    )
    union = math.pi * (r1**2 + r2**2) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(d))
