"""Train the seed network with the seed's settings, without Ray, and print its metrics.

python experiments/seed_baseline.py            # 400 steps of batch 64, as the notebook
python experiments/seed_baseline.py --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from models import ModelConfig, TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="Adam steps (default: 400)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="weights and data seed")
    parser.add_argument("--val-size", type=int, default=2048, help="validation images")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, but got {args.steps}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train_config = TrainConfig(val_size=args.val_size)  # Adam 1e-4, 0.5, 0.9; batch 64
    metrics = train(ModelConfig.seed(), train_config, args.steps, device, args.seed, log_every=50)
    if args.json:
        print(json.dumps(metrics))
        return
    print(f"seed network, {args.steps} steps of batch 64 on {device}:")
    for name, value in metrics.items():
        print(f"  {name:<14} {value:10.3f}")


if __name__ == "__main__":
    main()
