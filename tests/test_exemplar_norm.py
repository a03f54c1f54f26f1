"""Properties of the EN layer that DESIGN.md names: ratios, equivalences, invariances, fusion."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from en_analysis.nn import ExemplarNorm2d
from en_analysis.nn.exemplar_norm import _moments

TOL = dict(atol=2e-5, rtol=1e-4)


def _layer(c=8, **kw):
    torch.manual_seed(0)
    layer = ExemplarNorm2d(c, **kw)
    with torch.no_grad():  # random affine and a ratio net that is not at its uniform start
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
        layer.ratio_fc2.weight.normal_(0, 5.0)
        layer.ratio_bias.normal_(0, 0.5)
    return layer


def _x(n=6, c=8, h=5, w=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g) * 3 + torch.linspace(-2, 2, c)[:, None, None]


def test_ratios_are_a_distribution_per_sample():
    layer = _layer()
    layer(_x())
    lam = layer.last_ratios
    assert lam.shape == (6, 3)
    assert (lam >= 0).all()
    torch.testing.assert_close(lam.sum(1), torch.ones(6))
    assert lam.std(0).max() > 1e-3  # per-sample, not one shared mixture


def test_fresh_layer_starts_at_uniform_ratios():
    layer = ExemplarNorm2d(8)
    layer(_x())
    torch.testing.assert_close(layer.last_ratios, torch.full((6, 3), 1 / 3))


@pytest.mark.parametrize("train", [True, False])
def test_one_hot_ratios_equal_bn_in_ln(train):
    x = _x()
    en = _layer()
    bn = nn.BatchNorm2d(8)
    bn.load_state_dict(
        {k: v for k, v in en.state_dict().items() if k in bn.state_dict()}, strict=True
    )
    if not train:  # give both the same non-trivial running statistics first
        en.fix_ratios([0, 0, 1])
        for _ in range(3):
            en(x * 1.5 + 0.3)
            bn(x * 1.5 + 0.3)
    en.train(train)
    bn.train(train)
    w, b = en.weight, en.bias
    expected = {
        "in": F.instance_norm(x, weight=w, bias=b, eps=en.eps),
        "ln": F.group_norm(x, 1, w, b, en.eps),
        "bn": bn(x),
    }
    for k, name in enumerate(en.normalizers):
        one_hot = copy.deepcopy(en)
        one_hot.fix_ratios(torch.eye(3)[k])
        torch.testing.assert_close(one_hot(x), expected[name], **TOL, msg=name)
        torch.testing.assert_close(one_hot.running_mean, bn.running_mean, **TOL)
        torch.testing.assert_close(one_hot.running_var, bn.running_var, **TOL)


def test_one_hot_gn_equals_group_norm():
    x = _x(c=8)
    en = _layer(normalizers=("in", "gn"), gn_groups=4)
    en.fix_ratios([0, 1])
    torch.testing.assert_close(en(x), F.group_norm(x, 4, en.weight, en.bias, en.eps), **TOL)


@pytest.mark.parametrize("train", [True, False])
def test_fused_output_equals_k_normalized_copies(train):
    x = _x()
    layer = _layer().train(train)
    reference = copy.deepcopy(layer)
    torch.testing.assert_close(layer(x), reference.reference_forward(x), **TOL)
    # both update the BN running statistics exactly once
    torch.testing.assert_close(layer.running_mean, reference.running_mean)
    assert layer.num_batches_tracked == reference.num_batches_tracked


def test_fused_gradients_equal_autograd_of_the_formula():
    x = _x().requires_grad_()
    layer = _layer()
    g = torch.randn(6, 8, 5, 7)
    layer(x).backward(g)
    fused = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    layer.reference_forward(x).backward(g)
    reference = [x.grad] + [p.grad for p in layer.parameters()]
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_gradcheck_in_double_precision():
    layer = _layer(c=4).double()
    x = _x(n=3, c=4, h=3, w=2).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,), atol=1e-6)


def test_eval_ratios_and_output_do_not_depend_on_the_batch():
    layer = _layer()
    layer(_x(n=16, seed=3))  # running statistics
    layer.eval()
    big = _x(n=64, seed=4)
    with torch.no_grad():
        y_all = layer(big)
        lam_all = layer.last_ratios
        for i in (0, 17, 63):
            y_one = layer(big[i : i + 1])
            torch.testing.assert_close(layer.last_ratios, lam_all[i : i + 1], atol=1e-6, rtol=0)
            torch.testing.assert_close(y_one, y_all[i : i + 1], **TOL)


def test_training_ratios_do_depend_on_the_batch():
    layer = _layer()
    big = _x(n=8, seed=4)
    layer(big)
    lam_all = layer.last_ratios
    layer(big[:2] * 5)
    assert not torch.allclose(layer.last_ratios[0], lam_all[0])


def test_moments_match_torch():
    x = _x()
    m, ex2 = _moments(x)
    torch.testing.assert_close(m, x.mean((2, 3)))
    torch.testing.assert_close(ex2 - m**2, x.var((2, 3), unbiased=False), **TOL)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="normalizers"):
        ExemplarNorm2d(4, normalizers=("in", "xn"))
    with pytest.raises(ValueError, match="expects"):
        ExemplarNorm2d(4)(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="ratios"):
        ExemplarNorm2d(4).fix_ratios([0.5, 0.6, 0])


def test_bf16_autocast_keeps_statistics_in_float32():
    layer = _layer()
    x = _x()
    reference = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.bfloat16().requires_grad_())
        y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and layer.last_ratios.dtype == torch.float32
    torch.testing.assert_close(y.float(), reference, atol=0.1, rtol=0.02)
