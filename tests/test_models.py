import math

import pytest
import torch

from data import CircleConfig
from models import ConvRegressor, ModelConfig, TrainConfig, Trainer, train


def test_seed_preset_rebuilds_the_seed_network():
    model = ConvRegressor(ModelConfig.seed())
    assert sum(p.numel() for p in model.parameters()) == 1_490_128
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and all(c.kernel_size == (7, 7) for c in convs)
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("pooling", ["none", "max", "avg"])
@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("head", ["dense", "subnets"])
def test_every_architecture_builds_and_runs(pooling, norm, head):
    config = ModelConfig(depth=3, filters=6, kernel_size=3, pooling=pooling, norm=norm, head=head)
    model = ConvRegressor(config, image_size=32)
    out = model(torch.rand(4, 1, 32, 32))
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert has_bn == (norm == "batch")


def test_flat_size_follows_config_and_image_size():
    config = ModelConfig(depth=4, filters=8, pooling="max", pool_every=2, head="dense")
    for size in (32, 64, 48):
        model = ConvRegressor(config, image_size=size)
        side = size // 4
        assert model.head[0].in_features == 8 * side * side
        assert model(torch.rand(1, 1, size, size)).shape == (1, 3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kernel_size": 4}, "kernel_size"),
        ({"depth": 0}, "depth"),
        ({"activation": "swish"}, "activation"),
        ({"activation": ("relu", "relu")}, "activation"),
        ({"pooling": "min"}, "pooling"),
        ({"norm": "layer"}, "norm"),
        ({"head": "mlp"}, "head"),
    ],
)
def test_bad_model_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kwargs)


def test_pooling_below_one_pixel_is_rejected():
    config = ModelConfig(depth=8, pooling="max", pool_every=1)
    with pytest.raises(ValueError, match="pooling='max'.*below 1 pixel"):
        ConvRegressor(config, image_size=64)


def test_config_round_trips_through_dict():
    config = ModelConfig.seed()
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"depth": 2, "width": 3})


@pytest.mark.parametrize(("field", "value"), [("lr", 0.0), ("beta2", 1.0), ("batch_size", 0)])
def test_bad_train_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


SMALL = ModelConfig(depth=2, filters=8, kernel_size=3, pooling="max", pool_every=1)
CIRCLES = CircleConfig()


def test_training_lowers_validation_error():
    config = TrainConfig(lr=3e-3, beta1=0.9, beta2=0.999, batch_size=32, val_size=256)
    untrained = Trainer(SMALL, config).evaluate()
    trained = train(SMALL, config, steps=150)
    assert set(trained) >= {"val_rmse", "val_rmse_x", "val_iou", "val_iou90", "train_loss"}
    assert trained["val_rmse"] < 0.7 * untrained["val_rmse"]
    assert trained["val_iou"] > untrained["val_iou"]
    assert math.isfinite(trained["samples_per_s"]) and trained["samples_per_s"] > 0


def test_training_is_reproducible_and_resumes_exactly():
    config = TrainConfig(lr=1e-3, batch_size=8, val_size=32)
    straight = Trainer(SMALL, config, seed=4)
    straight.train_steps(6)

    first = Trainer(SMALL, config, seed=4)
    first.train_steps(3)
    state = first.state_dict()
    resumed = Trainer(SMALL, config, seed=99)
    resumed.load_state_dict(state)
    resumed.train_steps(3)

    assert resumed.step == 6
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_divergence_raises_with_the_loss_named():
    config = TrainConfig(lr=0.9, beta1=0.0, beta2=0.0, batch_size=8, val_size=16)
    model = ModelConfig(depth=1, filters=2, kernel_size=3, activation="none", pooling="max")
    trainer = Trainer(model, config)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="train_loss became nan"):
        trainer.train_steps(2)
