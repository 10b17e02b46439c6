"""precision: auto picks the device's native arithmetic; an explicit bf16 on a GPU without it warns once."""

import pytest
import torch

from cifar_resnet.config import ConfigError, config_from_dict, load_config
from cifar_resnet import runtime as device
from cifar_resnet.runtime import divergence_advice, resolve_precision

from conftest import PRESETS

CUDA = torch.device("cuda")


@pytest.fixture
def gpu(monkeypatch):
    """Pretend the CUDA device has the given compute capability (no GPU needed)."""
    def set_capability(major: int, minor: int, name: str) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    return set_capability


@pytest.mark.parametrize("asked", ["auto", "fp16", "fp32"])
def test_a_cpu_computes_in_fp32_unless_bf16_is_asked(asked):
    warnings = []
    assert resolve_precision(asked, torch.device("cpu"), warn=warnings.append) == "fp32" and not warnings


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_runs_where_native_and_else_falls_back_in_one_line(monkeypatch, native):
    monkeypatch.setattr(device, "native_cpu_bf16", lambda: native)
    warnings = []
    assert resolve_precision("bf16", torch.device("cpu"), warn=warnings.append) == ("bf16" if native else "fp32")
    assert warnings == ([] if native else ["warning: train.precision bf16 on a CPU without native bf16 "
                                           "(AVX512-BF16 or AMX): computing in fp32"])
    resolved = resolve_precision("bf16", torch.device("cpu"))
    with device.autocast(torch.device("cpu"), resolved):  # autocast takes the resolved precision
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if native else torch.float32)


def test_auto_is_fp16_on_compute_capability_7_5(gpu):
    gpu(7, 5, "Tesla T4")
    assert resolve_precision("auto", CUDA) == "fp16"


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)])
def test_auto_is_bf16_from_compute_capability_8_0(gpu, capability):
    gpu(*capability, "NVIDIA A100")
    assert resolve_precision("auto", CUDA) == "bf16"


def test_explicit_bf16_without_native_support_warns_in_one_line(gpu):
    gpu(7, 5, "Tesla T4")
    warnings = []
    assert resolve_precision("bf16", CUDA, warn=warnings.append) == "bf16"  # honoured, but said
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "Tesla T4" in warnings[0] and "7.5" in warnings[0] and "fp16" in warnings[0]


def test_explicit_bf16_with_native_support_is_silent(gpu):
    gpu(8, 0, "NVIDIA A100")
    warnings = []
    assert resolve_precision("bf16", CUDA, warn=warnings.append) == "bf16" and not warnings


def test_an_unknown_precision_names_the_choices():
    """Checked when the configuration is read, not by `resolve_precision` on the training path."""
    with pytest.raises(ConfigError, match="train.precision: unknown 'fp8'; choose auto, bf16, fp16, fp32"):
        config_from_dict({"train": {"precision": "fp8"}})


def test_divergence_advice_fits_the_device(gpu):
    gpu(7, 5, "Tesla T4")
    assert "bf16" not in divergence_advice("fp16", CUDA) and "fp32" in divergence_advice("fp16", CUDA)
    gpu(9, 0, "NVIDIA H200")
    assert "bf16" in divergence_advice("fp16", CUDA)
    assert "precision" not in divergence_advice("fp32", torch.device("cpu"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_lets_the_device_choose(preset):
    # the cpu preset asks for bf16, which a CPU runs only where native (auto is fp32 on a CPU): its network
    # trains about 2.5 times faster so on an AMX Xeon, where a basic ResNet trains slower in bf16 than in fp32;
    # cpu_fp32, made for the CPUs without it, says fp32 as its name does
    expected = {"cpu": "bf16", "cpu_fp32": "fp32"}.get(preset.stem, "auto")
    assert load_config(preset).train.precision == expected
