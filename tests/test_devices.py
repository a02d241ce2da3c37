"""--device: one parser for every command."""

import pytest
import torch

from scenectl.devices import TORCHRUN_ENV, parse_device, torchrun_env
from scenectl.distributed import init_distributed
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


@pytest.mark.parametrize("env, name", [({"WORLD_SIZE": "abc"}, "WORLD_SIZE"), ({"LOCAL_RANK": "-1"}, "LOCAL_RANK"),
                                       ({"RANK": "1" * 5000}, "RANK"), ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
                                       ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2, WORLD_SIZE=2")])
def test_junk_torchrun_environment_is_one_line(monkeypatch, env, name):
    """torchrun's variables are data too: junk in them is a one-line error naming the variable, not a traceback
    (issue 23: `int(os.environ[...])` raised ValueError, reported as an unexpected exit 1)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ScenectlError, match=f"environment variables? .*{name}"):
        torchrun_env()
    with pytest.raises(ScenectlError, match=f"environment variables? .*{name}"):
        init_distributed("cpu")


def test_torchrun_environment_read(monkeypatch):
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    assert torchrun_env() == (0, 1, 0)
    monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("WORLD_SIZE", "4"), monkeypatch.setenv("LOCAL_RANK", " 1 ")
    assert torchrun_env() == (1, 4, 1)
