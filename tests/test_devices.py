"""--device: one parser for every command."""

import pytest
import torch

from scenectl.devices import parse_device
from scenectl.errors import ScenectlError


def test_cpu_and_auto():
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cpu:1", "cuda:-1", "", "auto:0"])
def test_bad_forms_name_the_option(bad):
    with pytest.raises(ScenectlError, match="--device must be auto, cpu, cuda or cuda:N"):
        parse_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_line(name):
    with pytest.raises(ScenectlError, match="torch sees no CUDA GPU"):
        parse_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_index_out_of_range():
    n = torch.cuda.device_count()
    assert parse_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ScenectlError, match=f"has {n} GPU"):
        parse_device(f"cuda:{n}")
