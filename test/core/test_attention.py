import pytest
import torch
import torch.nn.functional as F

from dexwm_ros.core.attention import PLAIN_CPU_MAX_KEYS, attention


@pytest.mark.parametrize("keys", [1, 28, 84, PLAIN_CPU_MAX_KEYS + 1])
def test_attention_matches_fused_kernel(keys):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 28, 32), torch.randn(3, 2, keys, 32), torch.randn(3, 2, keys, 16)
    out = attention(q, k, v)
    assert out.shape == (3, 2, 28, 16)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


def test_attention_gradients_match_fused_kernel():
    torch.manual_seed(1)
    inputs = [torch.randn(2, 4, 7, 8, requires_grad=True) for _ in range(3)]
    attention(*inputs).square().sum().backward()
    plain = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    F.scaled_dot_product_attention(*inputs).square().sum().backward()
    for a, t in zip(plain, inputs, strict=True):
        torch.testing.assert_close(a, t.grad)


def test_attention_under_bf16_autocast_stays_close():
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 2, 28, 32) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    torch.testing.assert_close(out.float(), F.scaled_dot_product_attention(q, k, v),
                               atol=0.05, rtol=0.05)
