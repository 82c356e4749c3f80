"""Device/dtype choice and seeding."""

import pytest
import torch

from dit_translate.runtime import (
    hub_offline,
    make_generator,
    pick_device,
    pick_dtype,
    step_generator,
)


def test_device_and_dtype_choice():
    dev = pick_device()
    assert dev.type == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cuda")) == torch.float16
    assert pick_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float7'"):
        pick_dtype(torch.device("cpu"), "float7")
    with pytest.raises(ValueError, match="unknown dtype 'Tensor'"):
        pick_dtype(torch.device("cpu"), "Tensor")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


def test_seeding_is_reproducible(monkeypatch):
    assert torch.equal(torch.rand(3, generator=step_generator(1, 7)), torch.rand(3, generator=step_generator(1, 7)))
    assert not torch.equal(torch.rand(3, generator=step_generator(1, 7)), torch.rand(3, generator=step_generator(1, 8)))
    assert make_generator(0, "cpu").device.type == "cpu"
    assert torch.equal(torch.randn(4, generator=make_generator(5)), torch.randn(4, generator=make_generator(5)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub_offline()
