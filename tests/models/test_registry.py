"""The model registry and the interface every registered model shares."""

import pytest
import torch
import torch.nn.functional as F

from scenectl.errors import ScenectlError
from scenectl.models import create_model, list_models, resolve_name

ALL = ["densenet121", "densenet169", "ffc_resnet18", "ffc_resnet34", "ffc_resnet50", "resnet18", "resnet34", "resnet50"]


def test_list_and_aliases():
    assert list_models() == ALL
    assert resolve_name("ffc") == "ffc_resnet18"
    assert resolve_name("resnet") == "resnet18"
    assert resolve_name("ResNet50") == "resnet50"
    assert create_model("ffc", 3).arch == "ffc_resnet18"


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ScenectlError) as e:
        create_model("vgg16", 10)
    assert "vgg16" in str(e.value) and all(n in str(e.value) for n in ALL)


def test_bad_arguments():
    with pytest.raises(ScenectlError, match="num_classes"):
        create_model("resnet18", 0)
    with pytest.raises(ScenectlError, match="in_chans"):
        create_model("resnet18", 10, in_chans=0)
    with pytest.raises(ScenectlError, match="FFC models have no public pretrained weights"):
        create_model("ffc", 10, pretrained="imagenet")


FAST = {"densenet121", "ffc_resnet18", "resnet18"}  # the smallest of each family; the fast tier leaves out the rest


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in ALL])
@pytest.mark.parametrize("in_chans", [3, 4])
def test_forward_backward(name, in_chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes=6, in_chans=in_chans)
    x = torch.randn(2, in_chans, 33, 47)  # odd, non-square
    assert model.forward_features(x).shape == (2, model.num_features)
    out = model(x)
    assert out.shape == (2, 6)
    F.cross_entropy(out, torch.tensor([0, 5])).backward()
    assert model.conv1.weight.grad.abs().sum() > 0 and model.get_classifier().weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet18", "ffc_resnet18"])
def test_head_backbone_and_reset_classifier(name):
    model = create_model(name, num_classes=6, in_chans=4).eval()
    head = set(model.head_parameter_names())
    assert head == {"fc.weight", "fc.bias"}
    assert model.get_classifier() is model.fc and model.fc.in_features == model.num_features
    names = {n for n, _ in model.named_parameters()}
    backbone = list(model.backbone_parameters())
    assert len(backbone) == len(names) - 2 and all(p is not model.fc.weight for p in backbone)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 4, 32, 32)
    feats = model.forward_features(x)
    model.reset_classifier(11)
    assert model(x).shape == (2, 11)
    torch.testing.assert_close(model.forward_features(x), feats)  # backbone untouched
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("fc."))


@pytest.mark.parametrize("name", ["resnet18", "ffc_resnet18"])
def test_deterministic_given_seed(name):
    def build():
        torch.manual_seed(123)
        return create_model(name, 4, 4)

    a, b = build(), build()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    x = torch.randn(2, 4, 40, 40)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    torch.manual_seed(124)
    c = create_model(name, 4, 4)
    assert not torch.equal(c.conv1.weight, a.conv1.weight)
