"""`train --hole-only`: the same model and recipe on the hidden region alone (RGB replaced by the fill, mask channel
kept), recorded in the checkpoint so every command that builds the model feeds it the same input."""

import json

import numpy as np
import pytest
import torch

from scenectl.checkpoint import read_checkpoint
from scenectl.data.masks import MEAN_RGB
from scenectl.data.transforms import hole_only_input, make_hole_only, model_input
from scenectl.errors import ScenectlError
from scenectl.models import create_model
from scenectl.train import TrainConfig, train
import kit
from kit import write_shards


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A reader's batch: RGB (2, 3, 32, 32) uint8 drawn from `seed`, and a fixed mask (2, 1, 32, 32) uint8."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    mask[0, :, 4:12, 8:20], mask[1, :, 10:30, 2:9] = 255, 255
    return rgb, mask


def test_hole_only_input_is_the_fill_everywhere_and_the_mask():
    rgb, mask = _batch(0)
    x = model_input(rgb, mask)  # (2, 4, 32, 32)
    out = hole_only_input(x)
    fill = model_input(torch.tensor(MEAN_RGB, dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 32, 32).contiguous())
    torch.testing.assert_close(out[:, :3], fill, rtol=0, atol=1e-6)  # the RGB a mean-filled pixel gets
    assert torch.equal(out[:, 3:], x[:, 3:]) and not torch.equal(x[:, :3], out[:, :3])  # mask kept; input untouched
    with pytest.raises(ScenectlError, match="mask channel"):
        hole_only_input(x[:, :3])


def test_a_hole_only_model_ignores_the_scene():
    torch.manual_seed(0)
    model = create_model("resnet18", 5, 4).eval()
    (a, mask), (b, _) = _batch(1), _batch(2)
    xa, xb = model_input(a, mask), model_input(b, mask)
    with torch.no_grad():
        assert not torch.allclose(model(xa), model(xb))  # an ordinary model sees the pixels
        make_hole_only(model)
        torch.testing.assert_close(model(xa), model(xb), rtol=0, atol=0)  # the control sees only the hole
        other = mask.flip(-1)
        assert not torch.allclose(model(xa), model(model_input(a, other)))  # ... and does see the hole


@pytest.mark.slow
def test_train_hole_only_records_it_and_eval_builds_the_same_model(tmp_path):
    shards = {s: write_shards(tmp_path / s, n=8, per_shard=8, size=32, seed=i) for i, s in enumerate(("t", "v"))}
    base = dict(shards=str(shards["t"]), val_shards=str(shards["v"]), arch="resnet18", epochs=1, steps_per_epoch=1,
                batch_size=4, workers=0, device="cpu", shuffle_buffer=8)
    assert train(TrainConfig(**base, out=str(tmp_path / "run"), hole_only=True))["step"] == 1
    ck = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ck.hole_only and ck.state["hole_only"] is True
    assert json.loads((tmp_path / "run" / "config.json").read_text())["hole_only"] is True
    model = ck.build_model()
    (a, mask), (b, _) = _batch(3), _batch(4)
    with torch.no_grad():
        torch.testing.assert_close(model(model_input(a, mask)), model(model_input(b, mask)), rtol=0, atol=0)
    with pytest.raises(ScenectlError, match="--no-mask-channel"):
        train(TrainConfig(**base, out=str(tmp_path / "bad"), hole_only=True, mask_channel=False))
    assert not (tmp_path / "bad").exists()
    # an ordinary run records hole_only false, and its model sees the scene
    train(TrainConfig(**base, out=str(tmp_path / "plain")))
    assert read_checkpoint(tmp_path / "plain" / "last.pt").hole_only is False


def test_a_checkpoint_with_a_bad_hole_only_field_is_refused(tmp_path):
    for bad in ("yes", 1):
        kit.checkpoint(tmp_path / "bad.pt", kit.CLASSES, hole_only=bad)
        with pytest.raises(ScenectlError, match="field 'hole_only'"):
            read_checkpoint(tmp_path / "bad.pt")


# --- the cheap probe: logistic regression on mask features -----------------------------------------------------------
def test_probe_features_are_a_coarse_grid_and_the_scalars():
    from PIL import Image

    from scenectl import maskonly

    m = np.zeros((64, 64), np.uint8)
    m[16:48, 0:16] = 255  # a box: x 0..1/4, y 1/4..3/4
    f = maskonly.mask_features(Image.fromarray(m))
    assert maskonly.N_FEATURES == 26 and f.shape == (26,)
    grid = f[:16].reshape(4, 4)
    assert grid[1:3, 0].tolist() == [1.0, 1.0] and grid.sum() == 2.0  # two of 16 cells hidden
    area, root, x0, y0, w, h, cx, cy, log_aspect, extent = f[16:]
    assert (area, x0, y0, w, h) == pytest.approx((0.125, 0.0, 0.25, 0.25, 0.5))
    assert log_aspect == pytest.approx(np.log(2.0)) and extent == pytest.approx(1.0)


def test_probe_reports_train_and_heldout_accuracy_and_picks_l2_inside_the_grid():
    from scenectl import maskonly

    rng = np.random.default_rng(0)
    n, c = 1200, 4
    labels = rng.integers(0, c, n)
    # the class sets the size scalar (well separated) plus 20 noise features: learnable, and overfittable
    x = np.concatenate([labels[:, None] + rng.normal(0, 0.3, (n, 1)), rng.normal(0, 1, (n, 20))], 1)
    ids = np.arange(n) // 2  # two samples per image
    model = maskonly.fit(x.astype(np.float32), labels, ids, c, seed=0)
    assert model.l2 in maskonly.L2_GRID
    assert model.heldout_samples == pytest.approx(0.2 * n, abs=2)
    # two neighbouring classes overlap a little (|difference| 1 = 3.3 sd): ~0.95 accuracy either way
    assert 0.85 < model.heldout_top1 <= 1.0 and 0.85 < model.train_top1 <= 1.0
    scores = model.scores(x.astype(np.float32))
    assert float((scores.argmax(1) == labels).mean()) == pytest.approx(model.train_top1)
    # one image only: nothing to hold out, so no held-out accuracy is claimed
    single = maskonly.fit(x[:10].astype(np.float32), labels[:10], np.zeros(10, np.int64), c, seed=0)
    assert single.heldout_top1 is None and single.heldout_samples == 0


def test_explained_share_is_clipped_and_has_an_interval():
    from scenectl.maskonly import explained_share

    # the hole beats the model: 4.1 times its gain, reported as the whole gain (1.0)
    assert explained_share(0.30, 0.92, 0.10) == {"value": 1.0, "ci": None, "unclipped": pytest.approx(4.1)}
    assert explained_share(0.30, 0.05, 0.10)["value"] == 0.0  # below the prior: none of the gain
    assert explained_share(0.10, 0.20, 0.12) == {"value": None, "ci": None, "unclipped": None}
    # (0.25 - 0.10) / (0.40 - 0.10) = 0.5; the resamples: ratios 0.5, 0.25, 1 (clipped from 2), one undefined
    dists = {"model": np.array([0.40, 0.50, 0.20, 0.10]), "mask_only": np.array([0.25, 0.20, 0.30, 0.3]),
             "prior": np.array([0.10, 0.10, 0.10, 0.10])}
    out = explained_share(0.40, 0.25, 0.10, dists)
    assert out["value"] == pytest.approx(0.5)
    lo, hi = out["ci"]
    assert 0.25 <= lo < 0.3 and 0.95 < hi <= 1.0  # the 2.5th / 97.5th percentiles of 0.25, 0.5, 1.0
