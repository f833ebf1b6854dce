"""Pooling, InfoNCE, the cap rule and response CE against independent (loop / full-logit) computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from coin_lightning.losses import (
    cap_to_generation,
    info_nce,
    last_token_index,
    pool_hidden,
    response_cross_entropies,
    response_cross_entropy,
)


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def _hand_info_nce(A, Pp, tau, N=None):
    """Symmetric InfoNCE with plain Python loops (CoIN Eq. 2)."""
    n = len(A)
    total = 0.0
    for X, Y in ((A, Pp), (Pp, A)):
        for i in range(n):
            logits = [_cos(X[i], Y[j]) / tau for j in range(n)]
            if N is not None:
                logits.append(_cos(X[i], N[i]) / tau)
            m = max(logits)
            lse = m + math.log(sum(math.exp(z - m) for z in logits))
            total += lse - logits[i]
    return total / (2 * n)


@pytest.mark.parametrize("with_negatives", [False, True])
def test_info_nce_matches_hand_computation(with_negatives):
    g = torch.Generator().manual_seed(1)
    A, P, N = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    out = info_nce(A, P, 0.5, N if with_negatives else None)
    expected = _hand_info_nce(A.tolist(), P.tolist(), 0.5, N.tolist() if with_negatives else None)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    pos = sum(_cos(A[i].tolist(), P[i].tolist()) for i in range(3)) / 3
    assert out.pos_sim.item() == pytest.approx(pos, rel=1e-5, abs=1e-6)
    negs = [_cos(A[i].tolist(), P[j].tolist()) for i in range(3) for j in range(3) if i != j]
    if with_negatives:
        negs += [_cos(A[i].tolist(), N[i].tolist()) for i in range(3)] + [_cos(P[i].tolist(), N[i].tolist()) for i in range(3)]
    # a mean of cosines (float32 inside info_nce) can be near zero: an absolute tolerance there
    assert out.neg_sim.item() == pytest.approx(sum(negs) / len(negs), rel=1e-5, abs=1e-6)


def test_info_nce_is_low_for_aligned_pairs_and_symmetric():
    A = torch.eye(4)
    aligned = info_nce(A, A.clone(), 0.05).loss
    shuffled = info_nce(A, A[[1, 0, 3, 2]], 0.05).loss
    assert aligned < 1e-6 < shuffled
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    assert info_nce(X, Y, 0.1).loss.item() == pytest.approx(info_nce(Y, X, 0.1).loss.item(), rel=1e-6, abs=1e-6)


def test_info_nce_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.ones(2, 3), torch.ones(2, 3), 0.0)


def test_cap_rule_value_and_gradient():
    cl = torch.tensor(0.8, requires_grad=True)
    gen = torch.tensor(2.0)
    weighted = 1000 * cl  # 800 > 2: rescaled to the generation loss's magnitude
    capped = cap_to_generation(weighted, gen)
    assert capped.item() == pytest.approx(2.0, abs=1e-6)
    capped.backward()
    assert cl.grad.item() == pytest.approx(1000 * 2.0 / 800.0, abs=1e-6)  # gradient scaled by gen / (lambda*cl)
    small = torch.tensor(0.5, requires_grad=True)
    assert cap_to_generation(1 * small, gen).item() == pytest.approx(0.5, abs=1e-6)  # below the cap: unchanged


def test_last_token_index_and_pooling_any_padding_side():
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert last_token_index(left).tolist() == [4, 4]
    assert last_token_index(right).tolist() == [2, 4]
    h = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    hr = h.clone()
    hr[0, :3] = h[0, 2:]  # row 0's 3 real tokens moved to the right-padded layout
    assert torch.equal(pool_hidden(h, left, "last"), pool_hidden(hr, right, "last"))
    torch.testing.assert_close(pool_hidden(h, left, "mean"), pool_hidden(hr, right, "mean"), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pool_hidden(h, left, "mean")[0], h[0, 2:].mean(0), rtol=1e-5, atol=1e-5)
    start = torch.tensor([3, 2])
    assert torch.equal(pool_hidden(h, left, "last_prompt", start), torch.stack([h[0, 2], h[1, 1]]))
    with pytest.raises(ValueError, match="pooling"):
        pool_hidden(h, left, "max")


def test_response_ce_equals_full_logit_reference():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 7, 8, generator=g)
    head = torch.nn.Linear(8, 11, bias=False)
    labels = torch.full((4, 7), -100)
    labels[0, 4:] = torch.tensor([1, 2, 3])
    labels[1, 5:] = torch.tensor([4, 5])
    labels[2, 3:] = torch.tensor([6, 7, 8, 9])
    labels[3, 6:] = torch.tensor([10])
    # reference: logits over every position, shift, mean over labelled tokens (HF / CoIN reference code)
    full = head(hidden)[:2, :-1].reshape(-1, 11)
    ref = F.cross_entropy(full, labels[:2, 1:].reshape(-1), ignore_index=-100)
    assert response_cross_entropy(hidden, labels, head, slice(0, 2)).item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


def test_response_ces_of_several_groups_use_one_projection():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(4, 6, 8, generator=g, requires_grad=True)
    head = torch.nn.Linear(8, 11, bias=False)
    labels = torch.full((4, 6), -100)
    labels[0, 3:] = torch.tensor([1, 2, 3])
    labels[2, 4:] = torch.tensor([4, 5])
    labels[3, 5:] = torch.tensor([6])  # row 1 has no response token
    calls = []
    head.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    groups = [slice(0, 2), slice(2, 4)]
    fused = response_cross_entropies(hidden, labels, head, groups, [None, torch.tensor(4.0)])
    assert calls == [6]  # one LM-head call on the 3 + 3 labelled positions
    # each group against an independent full-logit computation
    for loss, rows, denom in zip(fused, groups, (3.0, 4.0)):
        full = head(hidden)[rows, :-1].reshape(-1, 11)
        want = F.cross_entropy(full, labels[rows, 1:].reshape(-1), ignore_index=-100, reduction="sum") / denom
        torch.testing.assert_close(loss, want)
    (grad,) = torch.autograd.grad(fused[0] + fused[1], hidden)
    hidden2 = hidden.detach().clone().requires_grad_()
    sep = response_cross_entropy(hidden2, labels, head, groups[0]) + response_cross_entropy(
        hidden2, labels, head, groups[1], torch.tensor(4.0))
    sep.backward()
    torch.testing.assert_close(grad, hidden2.grad)
    empty = torch.full((4, 6), -100)  # no labelled token at all: 0, still differentiable
    zero = response_cross_entropies(hidden, empty, head, groups)
    assert [z.item() for z in zero] == [0.0, 0.0] and zero[0].requires_grad
