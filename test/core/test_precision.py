"""slow_bf16_reason: a warning exactly where bf16 is emulated."""
import torch

from dexwm_ros.core.precision import slow_bf16_reason


def test_warns_on_cpus_without_native_bf16_only():
    reason = slow_bf16_reason("cpu")
    assert (reason is None) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if reason is not None:
        assert torch.backends.cpu.get_cpu_capability() in reason


def test_no_warning_off_the_cpu():
    assert slow_bf16_reason("cuda:0") is None
    assert slow_bf16_reason(torch.device("meta")) is None
