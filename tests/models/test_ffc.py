"""Fast Fourier Convolution: spectral units, the four FFC paths, FFC-ResNet shapes, gradients and precision."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scenectl.models import create_model
from scenectl.models.ffc import FFC, FFC_BN_ACT, FourierUnit, SpectralTransform


def linear_fourier_unit(channels: int) -> FourierUnit:
    """A FourierUnit reduced to rfft2 → identity on the spectrum → irfft2 (conv = I, BN off, no ReLU)."""
    fu = FourierUnit(channels, channels)
    with torch.no_grad():
        fu.conv.weight.copy_(torch.eye(2 * channels)[:, :, None, None])
    fu.bn, fu.relu = nn.Identity(), nn.Identity()
    return fu


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (5, 5), (1, 3), (6, 11)])
def test_fourier_unit_round_trip_on_odd_sizes(hw):
    # the real/imag stacking and irfft2(s=...) must invert rfft2 exactly, odd widths included
    x = torch.randn(2, 3, *hw)
    torch.testing.assert_close(linear_fourier_unit(3)(x), x, atol=1e-5, rtol=1e-5)


def test_fourier_unit_is_global():
    # one output pixel depends on the far corner of the input: an image-wide receptive field in one layer
    torch.manual_seed(0)
    fu = FourierUnit(4, 4).eval()
    x = torch.randn(1, 4, 9, 13, requires_grad=True)
    fu(x)[0, :, 0, 0].sum().backward()
    assert x.grad[0, :, -1, -1].abs().sum() > 0


@pytest.mark.parametrize("stride, hw, out_hw", [(1, (9, 7), (9, 7)), (2, (9, 7), (5, 4)), (2, (2, 3), (1, 2))])
def test_spectral_transform_shapes(stride, hw, out_hw):
    st = SpectralTransform(16, 24, stride=stride)
    assert st(torch.randn(2, 16, *hw)).shape == (2, 24, *out_hw)


def test_lfu_tiles_quadrants_back_to_the_input_size():
    st = SpectralTransform(16, 16)  # mid 8 channels, LFU on the first 2
    for hw in [(4, 4), (5, 7), (1, 6)]:
        x = torch.randn(2, 8, *hw)
        lfu = st.local_fourier(x)
        if min(hw) < 2:
            assert isinstance(lfu, int) and lfu == 0  # no quadrants to cut
        else:
            assert lfu.shape == x.shape
            hh, hw_ = hw[0] // 2, hw[1] // 2
            # periodic tiling: every quadrant-sized block repeats the top-left one
            torch.testing.assert_close(lfu[..., hh : 2 * hh, hw_ : 2 * hw_], lfu[..., :hh, :hw_])


def test_ffc_paths_and_shapes():
    ffc = FFC(32, 64, kernel_size=3, ratio_gin=0.5, ratio_gout=0.25, stride=2, padding=1)
    assert (ffc.in_cl, ffc.in_cg, ffc.out_cl, ffc.out_cg) == (16, 16, 48, 16)
    out_l, out_g = ffc((torch.randn(2, 16, 9, 7), torch.randn(2, 16, 9, 7)))
    assert out_l.shape == (2, 48, 5, 4) and out_g.shape == (2, 16, 5, 4)
    # opening (0 → r) and closing (r → 0) the global branch
    opening = FFC_BN_ACT(8, 16, 1, 0.0, 0.5)
    assert opening.ffc.convg2l is None and opening.ffc.convg2g is None
    out_l, out_g = opening((torch.randn(2, 8, 6, 6), None))
    assert out_l.shape == out_g.shape == (2, 8, 6, 6)
    closing = FFC_BN_ACT(16, 16, 3, 0.5, 0.0)
    out_l, out_g = closing((torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)))
    assert out_l.shape == (2, 16, 6, 6) and out_g is None


def test_ffc_rejects_bad_ratio():
    with pytest.raises(ValueError):
        FFC(8, 8, 3, 1.0, 0.5)


@pytest.fixture(scope="module")
def ffc18():
    torch.manual_seed(0)
    return create_model("ffc_resnet18", num_classes=5, in_chans=4)


def test_stage_ratios(ffc18):
    # stage 1 opens the global branch, stages 2-3 keep it, stage 4 closes it so the head gets a plain tensor
    assert ffc18.layer1[0].conv1.ffc.in_cg == 0 and ffc18.layer1[0].conv1.ffc.out_cg == 32
    assert ffc18.layer2[0].conv1.ffc.in_cg == 32 and ffc18.layer3[1].conv2.ffc.out_cg == 128
    assert ffc18.layer4[0].conv1.ffc.in_cg == 128 and ffc18.layer4[0].conv1.ffc.out_cg == 0
    assert ffc18.layer4[1].conv2.ffc.out_cg == 0


@pytest.mark.parametrize("hw", [(32, 32), (65, 65), (97, 64)])
def test_ffc_resnet_any_input_size(ffc18, hw):
    x = torch.randn(2, 4, *hw)
    assert ffc18(x).shape == (2, 5)
    assert ffc18.forward_features(x).shape == (2, ffc18.num_features)


def test_gradient_reaches_local_and_global_paths(ffc18):
    ffc18.zero_grad(set_to_none=True)
    F.cross_entropy(ffc18(torch.randn(2, 4, 64, 64)), torch.tensor([1, 3])).backward()
    # every parameter learns (the reference BasicBlock dropped its second convolution; ours must not)
    dead = [n for n, p in ffc18.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, dead
    ffcs = [m for m in ffc18.modules() if isinstance(m, FFC)]
    for path in ("convl2g", "convg2l"):
        convs = [getattr(m, path) for m in ffcs if getattr(m, path) is not None]
        assert convs and all(c.weight.grad.abs().sum() > 0 for c in convs), path
    spectral = [m.convg2g for m in ffcs if m.convg2g is not None]
    assert len(spectral) > 0
    for st in spectral:
        assert st.fu.conv.weight.grad.abs().sum() > 0
        assert st.lfu.conv.weight.grad.abs().sum() > 0


def test_cpu_bf16_autocast(ffc18):
    x = torch.randn(2, 4, 33, 47)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = ffc18(x)
    assert out.shape == (2, 5) and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert ffc18.layer2[0].conv1.ffc.convg2g.fu.conv.weight.grad is not None


def test_fourier_unit_keeps_half_input_dtype():
    # the FFT runs in float32 but the unit hands back the dtype it got
    fu = FourierUnit(4, 4)
    assert fu(torch.randn(2, 4, 7, 5).to(torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_non_power_of_two(dtype):
    model = create_model("ffc_resnet18", 5, 4).cuda()
    with torch.autocast(device_type="cuda", dtype=dtype):
        out = model(torch.randn(2, 4, 97, 65, device="cuda"))  # spectra of 25×17 etc.: cuFFT half would refuse
    assert torch.isfinite(out.float()).all()
