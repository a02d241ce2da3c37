"""torchvision DenseNets: torchvision's layout and parameter counts, the mask channel, the head interface, pretrained
weights from a file (old and new key names), and one training step through `scenectl train`."""

import pytest
import torch
import torchvision

from scenectl.models import create_model
from scenectl.models.pretrained import renamed

# torchvision's documented parameter counts of the 1000-class ImageNet models (and resnet18's, for the same check)
PARAMS = {"densenet121": 7_978_856, "densenet169": 14_149_480, "resnet18": 11_689_512, "resnet50": 25_557_032}


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_counts_and_keys_are_torchvision_s(name):
    ours = create_model(name, 1000)
    assert sum(p.numel() for p in ours.parameters()) == PARAMS[name]
    theirs = getattr(torchvision.models, name)(weights=None).state_dict()
    assert list(ours.state_dict()) == list(theirs)


def test_mask_channel_and_head_interface():
    model = create_model("densenet121", num_classes=7, in_chans=4)
    assert model.conv1 is model.features.conv0 and model.conv1.weight.shape == (64, 4, 7, 7)
    assert model.conv1.weight[:, 3].abs().sum() > 0  # from scratch the mask channel is initialised like RGB
    # a 4-channel model has one more stem input channel (7 x 7 x 64 weights) and a 7-class head instead of 1000
    assert sum(p.numel() for p in model.parameters()) == PARAMS["densenet121"] + 64 * 49 - 1024 * 993 - 993
    assert model.head_parameter_names() == ["classifier.weight", "classifier.bias"]
    assert model.get_classifier() is model.classifier and model.num_features == 1024
    x = torch.randn(2, 4, 32, 32)
    model.eval()
    feats = model.forward_features(x)
    assert feats.shape == (2, 1024)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.classifier.out_features == 3
    torch.testing.assert_close(model.forward_features(x), feats)
    assert len(list(model.backbone_parameters())) == len(list(model.parameters())) - 2


def test_pretrained_file_adapts_the_stem_and_reads_old_key_names(tmp_path):
    torch.manual_seed(2)
    net = torchvision.models.densenet121(weights=None).eval()
    state = net.state_dict()
    # torchvision's published files spell 'denselayer1.norm.1.weight' and, saved before PyTorch 0.4, hold no
    # BatchNorm num_batches_tracked: a file in that form loads too
    old = {k.replace("denselayer1.norm1.", "denselayer1.norm.1."): v for k, v in state.items()
           if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    assert set(renamed(old)) == {k for k in state if not k.endswith("num_batches_tracked")}
    path = tmp_path / "densenet121-old.pth"
    torch.save(old, path)
    model = create_model("densenet121", num_classes=5, in_chans=4, pretrained=str(path)).eval()
    torch.testing.assert_close(model.features.conv0.weight[:, :3], state["features.conv0.weight"], rtol=0, atol=0)
    assert model.features.conv0.weight[:, 3].abs().sum() == 0  # the mask channel starts silent
    assert model.classifier.weight.shape == (5, 1024)  # a fresh head for another class count
    rgb, mask = torch.randn(2, 3, 64, 64), torch.rand(2, 1, 64, 64).round()
    with torch.no_grad():  # with a silent mask channel the backbone computes what the pretrained one does on RGB
        ref = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(torch.relu(net.features(rgb)), 1), 1)
        torch.testing.assert_close(model.forward_features(torch.cat([rgb, mask], 1)), ref)


@pytest.mark.slow
def test_train_arch_densenet121_takes_a_step(tmp_path):
    from kit import write_shards

    from scenectl.checkpoint import load_checkpoint
    from scenectl.train import TrainConfig, train

    shards = {s: write_shards(tmp_path / s, n=8, per_shard=8, size=32, seed=i) for i, s in enumerate(("t", "v"))}
    out = tmp_path / "run"
    cfg = TrainConfig(shards=str(shards["t"]), val_shards=str(shards["v"]), out=str(out), arch="densenet121",
                      epochs=1, steps_per_epoch=1, batch_size=4, workers=0, device="cpu", shuffle_buffer=8,
                      amp=False)
    result = train(cfg)
    assert result["step"] == 1
    ck = load_checkpoint(out / "last.pt")
    assert ck["arch"] == "densenet121" and ck["in_chans"] == 4
    assert any(k.startswith("features.denseblock4.") for k in ck["model"])
