"""Packed-rows attention: the CPU kernel and the SDPA fallback against SDPA run row by row."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coin_lightning.model import packing
from coin_lightning.speedups import kernels
from coin_lightning.speedups.attention import packed_rows_sdpa, packed_sdpa_attention


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def _packed(lens: list[int], pad: int = 2) -> packing.PackedRows:
    """Left-padded rows of the given lengths (``pad`` extra columns), packed."""
    T = max(lens) + pad
    mask = torch.zeros(len(lens), T, dtype=torch.long)
    for i, n in enumerate(lens):
        mask[i, T - n:] = 1
    return packing.pack_rows(torch.zeros_like(mask), mask)


def _dense_attention(q, k, v, lens, scale):
    """Per row, real tokens only: SDPA on [1, heads, n, D] with repeated kv heads -> [1, N, heads, D]."""
    group = q.shape[1] // k.shape[1]
    outs, start = [], 0
    for n in lens:
        sl = slice(start, start + n)
        kk, vv = (t[:, :, sl].repeat_interleave(group, dim=1) for t in (k, v))
        outs.append(F.scaled_dot_product_attention(q[:, :, sl], kk, vv, is_causal=True, scale=scale))
        start += n
    return torch.cat(outs, dim=2).transpose(1, 2)


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 7)])
def test_softmax_backward_with_public_ops_equals_autograd(shape):
    g = torch.Generator().manual_seed(len(shape))
    scores = (torch.randn(*shape, generator=g) * 3).requires_grad_()
    grad = torch.randn(*shape, generator=g)
    probs = scores.softmax(-1)
    (want,) = torch.autograd.grad(probs, scores, grad)
    torch.testing.assert_close(kernels.softmax_backward(grad.clone(), probs.detach()), want)


@pytest.mark.parametrize("kernel", [kernels.packed_attention, packed_rows_sdpa])
@pytest.mark.parametrize("block", [3, 40])
@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (4, 2), (6, 2)])
def test_packed_attention_forward_and_backward_equal_sdpa_per_row(heads, kv_heads, block, kernel, monkeypatch):
    # the kernel's hand-written backward (public ops only) against autograd through plain SDPA per row
    monkeypatch.setattr(kernels, "ATTENTION_BLOCK", block)  # 3: three query blocks of the 9 positions; 40: one
    lens = [5, 9, 1, 7]
    assert len(kernels.attention_blocks(max(lens))) == (1 if block == 40 else 3)
    packed = _packed(lens)
    N, D = sum(lens), 8
    g = torch.Generator().manual_seed(heads)
    q, k, v = (torch.randn(1, h, N, D, generator=g) for h in (heads, kv_heads, kv_heads))
    grad = torch.randn(1, N, heads, D, generator=g)
    got_in = _leaves(q, k, v)
    out = kernel(*got_in, packed, 0.3)
    out.backward(grad)
    ref_in = _leaves(q, k, v)
    ref = _dense_attention(*ref_in, lens, 0.3)
    ref.backward(grad)
    torch.testing.assert_close(out, ref)
    for got, want in zip(got_in, ref_in):
        torch.testing.assert_close(got.grad, want.grad)


@pytest.mark.parametrize("on_cpu_kernel", [True, False])
@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (6, 2)])
def test_packed_attention_after_a_shared_prefix(heads, kv_heads, on_cpu_kernel, monkeypatch):
    # every row sees the P prefix keys and its own earlier keys: per row, SDPA over [prefix | row] with
    # a causal mask shifted by P; through the attention function: the CPU kernel (fp32), or the SDPA
    # fallback (float64 here stands for any input the kernel does not take: GPU, autocast, compile)
    monkeypatch.setattr(kernels, "ATTENTION_BLOCK", 3)
    lens, P, D = [5, 9, 1, 7], 4, 8
    packed = _packed(lens, pad=0)
    N = sum(lens)
    dtype = torch.float32 if on_cpu_kernel else torch.float64
    g = torch.Generator().manual_seed(heads)
    q = torch.randn(1, heads, N, D, generator=g, dtype=dtype)
    k, v = (torch.randn(1, kv_heads, P + N, D, generator=g, dtype=dtype) for _ in range(2))
    with torch.inference_mode():
        out, _ = packed_sdpa_attention(torch.nn.Module(), q, k, v, None, scaling=0.3, coin_packed=packed)
    rep = heads // kv_heads
    want, start = [], 0
    for n in lens:
        own = slice(P + start, P + start + n)
        kk = torch.cat([k[:, :, :P], k[:, :, own]], dim=2).repeat_interleave(rep, dim=1)
        vv = torch.cat([v[:, :, :P], v[:, :, own]], dim=2).repeat_interleave(rep, dim=1)
        allowed = torch.ones(n, P + n, dtype=torch.bool).tril(P)
        want.append(F.scaled_dot_product_attention(q[:, :, start:start + n], kk, vv, attn_mask=allowed, scale=0.3))
        start += n
    torch.testing.assert_close(out, torch.cat(want, dim=2).transpose(1, 2))
    with pytest.raises(ValueError, match="no backward"):
        kernels.packed_prefix_attention(q.float().requires_grad_(), k.float(), v.float(), packed, 0.3)


def test_attention_function_without_packed_rows_is_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) for _ in range(3))
    module = torch.nn.Module()
    module.is_causal = True
    out, _ = packed_sdpa_attention(module, q, k, v, None, scaling=0.3)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="dropout"):
        packed_sdpa_attention(module, q[:1], k[:1], v[:1], None, dropout=0.1, coin_packed=_packed([6], pad=0))
