"""Derivatives of the compiled op beyond the first backward: double backward,
forward mode and torch.func, against the differentiable reference.

Shape letters: N batch, C channels, G groups, H×W input, s scale, k kernel.
"""
import pytest
import torch
from torch.autograd import forward_ad, gradcheck, gradgradcheck

import carafe_mm.ops as ops
from carafe_mm.ops import carafe, carafe_reference
from .utils import make_inputs

pytestmark = pytest.mark.skipif(
    not ops.extension_available(),
    reason=f'carafe_mm._C did not load: {ops.extension_error()}')

# (k, G, s)
CASES = [(3, 2, 2), (1, 1, 1), (5, 1, 3), (3, 4, 1)]


def raw(features, masks, k, g, s):
    return torch.ops.carafe_mm.carafe_forward(features, masks, k, g, s)


def inputs(k, g, s, n=2, c=4, h=3, w=4):
    features, masks = make_inputs(n, c, h, w, k, g, s)
    return features.requires_grad_(), masks.requires_grad_()


@pytest.mark.parametrize('fn', [carafe, raw], ids=['carafe', 'raw_op'])
@pytest.mark.parametrize('k, g, s', CASES)
def test_gradgradcheck(fn, k, g, s):
    features, masks = inputs(k, g, s, n=1)
    assert gradgradcheck(lambda f, m: fn(f, m, k, g, s), (features, masks))


def test_backward_op_gradcheck():
    # carafe_backward itself is differentiable in all three inputs.
    features, masks = inputs(3, 2, 2)
    grad = torch.randn(2, 4, 6, 8, dtype=torch.float64, requires_grad=True)
    assert gradcheck(
        lambda g, f, m: torch.ops.carafe_mm.carafe_backward(g, f, m, 3, 2, 2),
        (grad, features, masks))


def test_gradient_penalty_matches_reference():
    # R1-style: the gradient of a loss of the input gradient (used by the
    # GANs of the inpainting experiments).
    def penalty(fn):
        features, masks = inputs(3, 1, 2)
        out = fn(features, masks, 3, 1, 2)
        (grad, ) = torch.autograd.grad(
            out.square().sum(), features, create_graph=True)
        grad.square().sum().backward()
        return features.grad, masks.grad

    for a, b in zip(penalty(carafe), penalty(carafe_reference)):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('k, g, s', CASES)
def test_forward_mode(k, g, s):
    features, masks = inputs(k, g, s)
    assert gradcheck(
        lambda f, m: carafe(f, m, k, g, s), (features, masks),
        check_forward_ad=True,
        check_backward_ad=False,
        check_undefined_grad=False,
        check_batched_grad=False)
    tangents = (torch.randn_like(features), torch.randn_like(masks))
    with forward_ad.dual_level():
        out = carafe(
            forward_ad.make_dual(features.detach(), tangents[0]),
            forward_ad.make_dual(masks.detach(), tangents[1]), k, g, s)
        tangent = forward_ad.unpack_dual(out).tangent
    _, expected = torch.func.jvp(lambda f, m: carafe_reference(f, m, k, g, s),
                                 (features.detach(), masks.detach()), tangents)
    torch.testing.assert_close(tangent, expected)


def test_torch_func_transforms():
    k, g, s = 3, 2, 2
    features, masks = (x.detach() for x in inputs(k, g, s, n=1))

    def both(fn):
        return (lambda f, m: fn(f, m, k, g, s),
                lambda f, m: carafe_reference(f, m, k, g, s))

    ours, ref = both(carafe)
    func = torch.func
    for transform in (func.jacrev, func.jacfwd):
        torch.testing.assert_close(
            transform(ours, argnums=(0, 1))(features, masks),
            transform(ref, argnums=(0, 1))(features, masks))
    loss = (lambda fn: lambda f: fn(f, masks).pow(3).sum())
    torch.testing.assert_close(
        func.grad(loss(ours))(features),
        func.grad(loss(ref))(features))
    torch.testing.assert_close(
        func.hessian(loss(ours))(features),
        func.hessian(loss(ref))(features))
    # vmap over a batch of features, and per-sample gradients (vmap of grad:
    # the backward op under vmap)
    batch = torch.randn(3, *features.shape, dtype=features.dtype)
    torch.testing.assert_close(
        func.vmap(ours, in_dims=(0, None))(batch, masks),
        func.vmap(ref, in_dims=(0, None))(batch, masks))
    masks_batch = torch.rand(3, *masks.shape, dtype=masks.dtype)
    torch.testing.assert_close(
        func.vmap(
            func.grad(lambda f, m: ours(f, m).square().sum(),
                      argnums=(0, 1)))(batch, masks_batch),
        func.vmap(
            func.grad(lambda f, m: ref(f, m).square().sum(),
                      argnums=(0, 1)))(batch, masks_batch))


def test_opcheck_backward_op_with_gradients():
    features, masks = inputs(3, 2, 2)
    grad = torch.randn(2, 4, 6, 8, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.carafe_mm.carafe_backward,
                          (grad, features, masks, 3, 2, 2))
