"""torchvision ResNets: layout, 4-channel stems, and pretrained weights from files or torch's cache (no network)."""

import urllib.error

import pytest
import torch
import torchvision

from scenectl.errors import ScenectlError
from scenectl.models import create_model


@pytest.fixture(scope="module")
def tv_state(tmp_path_factory):
    """A torchvision resnet18 (1000 classes) with random weights, saved as a plain state dict."""
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_state_dict_keys_are_torchvision_keys():
    ours = create_model("resnet18", 1000).state_dict()
    theirs = torchvision.models.resnet18(weights=None).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_four_channel_stem():
    model = create_model("resnet18", num_classes=7, in_chans=4)
    assert model.conv1.in_channels == 4 and model.conv1.weight.shape == (64, 4, 7, 7)
    assert model.conv1.weight[:, 3].abs().sum() > 0  # from scratch, the mask channel is initialised like RGB


def test_load_file_adapts_stem_and_drops_head(tv_state):
    net, path = tv_state
    model = create_model("resnet18", num_classes=10, in_chans=4, pretrained=str(path)).eval()
    ref = net.state_dict()
    torch.testing.assert_close(model.conv1.weight[:, :3], ref["conv1.weight"], rtol=0, atol=0)
    assert model.conv1.weight[:, 3].abs().sum() == 0  # mask channel starts silent
    for k, v in model.state_dict().items():
        if not k.startswith(("fc.", "conv1.")):
            torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)
    assert model.fc.weight.shape == (10, 512)  # fresh head for the new class count
    # with the zero mask channel the backbone computes exactly what the pretrained one does on RGB
    rgb, mask = torch.randn(2, 3, 64, 64), torch.rand(2, 1, 64, 64).round()
    with torch.no_grad():
        ref_feats = torch.nn.Sequential(*list(net.children())[:-1])(rgb).flatten(1)
        torch.testing.assert_close(model.forward_features(torch.cat([rgb, mask], 1)), ref_feats)


def test_load_file_keeps_head_when_classes_match(tv_state):
    net, path = tv_state
    model = create_model("resnet18", num_classes=1000, pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x))


def test_bad_weight_files(tmp_path, tv_state):
    with pytest.raises(ScenectlError, match="not found"):
        create_model("resnet18", 10, pretrained=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ScenectlError, match="junk.pth"):
        create_model("resnet18", 10, pretrained=str(junk))
    # a pickle that would build an arbitrary object is refused, not executed
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "obj": torchvision.models.resnet18}, evil)
    with pytest.raises(ScenectlError, match="refusing"):
        create_model("resnet18", 10, pretrained=str(evil))
    # weights of another architecture
    _, path18 = tv_state
    with pytest.raises(ScenectlError, match="do not fit"):
        create_model("resnet34", 10, pretrained=str(path18))


def test_imagenet_offline_error_says_how_to_provide_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ScenectlError) as e:
        create_model("resnet18", 10, 4, pretrained="imagenet")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and "--pretrained" in msg and str(tmp_path / "hub" / "checkpoints") in msg


def test_imagenet_from_torch_cache(tmp_path, monkeypatch, tv_state):
    # a file already in $TORCH_HOME/hub/checkpoints is used without any download
    net, path = tv_state
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    model = create_model("resnet18", 3, 4, pretrained="imagenet")
    torch.testing.assert_close(model.layer3[0].conv2.weight, net.layer3[0].conv2.weight, rtol=0, atol=0)
    assert model.conv1.weight[:, 3].abs().sum() == 0


def test_pretrained_weights_with_an_auxiliary_head(tv_state):
    net, path = tv_state
    model = create_model("resnet18", num_classes=10, in_chans=4, pretrained=str(path), aux_classes=10).eval()
    torch.testing.assert_close(model.layer4[1].conv2.weight, net.layer4[1].conv2.weight, rtol=0, atol=0)
    logits, aux = model(torch.randn(2, 4, 64, 64), aux=True)
    assert logits.shape == aux.shape == (2, 10)
    model.add_aux_head(0)
    assert not any(k.startswith("aux_fc.") for k in model.state_dict())
    with pytest.raises(ValueError, match="without an auxiliary head"):
        model(torch.randn(1, 4, 64, 64), aux=True)
