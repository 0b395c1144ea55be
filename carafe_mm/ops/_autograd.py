"""Derivatives of the compiled op, to any order, in reverse and forward mode.

Shape letters as in :mod:`carafe_mm.ops.carafe`. Write ``A(F, M)`` for
``carafe_forward(features, masks)`` and ``B(g, F, M)`` for
``carafe_backward(g, F, M) = (B_F(g, M), B_M(g, F))``, the gradients of
``<g, A(F, M)>`` with respect to F and M. CARAFE is bilinear in (F, M) and
``B`` is linear in each of its arguments, so every derivative is made of the
two ops again:

* ``A``: reverse ``B(g, F, M)``; forward ``A(dF, M) + A(F, dM)``.
* ``B``: reverse, for cotangents (u, v) of its two outputs,
  ``dg = A(u, M) + A(F, v)`` and ``(dF, dM) = B(g, u, v)``; forward
  ``B(dg, F, M) + B(g, dF, dM)``.

Two registrations use this:

* ``torch.library.register_autograd`` for both ops, which is what
  ``torch.compile``, ``torch.export`` and direct ``torch.ops.carafe_mm``
  calls see (reverse mode, any order);
* :class:`CarafeFunction` and :class:`CarafeBackwardFunction`, the
  ``autograd.Function`` s that :func:`carafe_mm.ops.carafe` runs in eager
  mode, which add forward mode (``jvp``) and ``vmap`` rules, so that
  ``torch.func.grad`` / ``jacrev`` / ``jacfwd`` / ``hessian`` / ``vmap`` and
  ``torch.autograd.forward_ad`` work too.
"""
import torch

from ._checks import as_int


def _ops():
    return torch.ops.carafe_mm


def _params(inputs):
    return tuple(
        as_int(name, value)
        for name, value in zip(('kernel_size', 'group_size',
                                'scale_factor'), inputs))


# ---------------------------------------------------------------------------
# torch.library registrations


def _forward_setup_context(ctx, inputs, output):
    features, masks, *params = inputs
    ctx.save_for_backward(features, masks)
    ctx.params = _params(params)


def _forward_backward(ctx, grad_output):
    features, masks = ctx.saved_tensors
    grad_features, grad_masks = _ops().carafe_backward(grad_output, features,
                                                       masks, *ctx.params)
    return grad_features, grad_masks, None, None, None


def _backward_setup_context(ctx, inputs, output):
    grad_output, features, masks, *params = inputs
    ctx.save_for_backward(grad_output, features, masks)
    ctx.params = _params(params)


def _backward_backward(ctx, grad_grad_features, grad_grad_masks):
    grad_output, features, masks = ctx.saved_tensors
    u = _zeros_if_none(grad_grad_features, features)
    v = _zeros_if_none(grad_grad_masks, masks)
    ops, params = _ops(), ctx.params
    d_grad_output = (
        ops.carafe_forward(u, masks, *params) +
        ops.carafe_forward(features, v, *params))
    d_features, d_masks = ops.carafe_backward(grad_output, u, v, *params)
    return d_grad_output, d_features, d_masks, None, None, None


def register_autograd():
    """Register the reverse-mode derivatives of both compiled ops."""
    torch.library.register_autograd(
        'carafe_mm::carafe_forward',
        _forward_backward,
        setup_context=_forward_setup_context)
    torch.library.register_autograd(
        'carafe_mm::carafe_backward',
        _backward_backward,
        setup_context=_backward_setup_context)


# ---------------------------------------------------------------------------
# autograd.Functions for eager mode (and torch.func)


def _zeros_if_none(tangent, like):
    return torch.zeros_like(like) if tangent is None else tangent


def _batch_first(x, dim, batch_size):
    """``x`` with its vmap dimension ``dim`` (None: unbatched) first."""
    if dim is None:
        return x.expand(batch_size, *x.shape)
    return x.movedim(dim, 0)


def _fold(x):
    """(B, N, ...) -> (B·N, ...)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _unfold(x, batch_size):
    return x.reshape(batch_size, x.shape[0] // batch_size, *x.shape[1:])


class CarafeFunction(torch.autograd.Function):
    """``carafe_forward`` with reverse, forward and vmap rules (see the
    module docstring)."""

    @staticmethod
    def forward(features, masks, kernel_size, group_size, scale_factor):
        return _ops().carafe_forward(features, masks, kernel_size, group_size,
                                     scale_factor)

    @staticmethod
    def setup_context(ctx, inputs, output):
        features, masks, *params = inputs
        ctx.save_for_backward(features, masks)
        ctx.save_for_forward(features, masks)
        ctx.params = tuple(params)

    @staticmethod
    def backward(ctx, grad_output):
        features, masks = ctx.saved_tensors
        grad_features, grad_masks = CarafeBackwardFunction.apply(
            grad_output, features, masks, *ctx.params)
        return grad_features, grad_masks, None, None, None

    @staticmethod
    def jvp(ctx, d_features, d_masks, *_):
        features, masks = ctx.saved_tensors
        terms = []
        if d_features is not None:
            terms.append(CarafeFunction.apply(d_features, masks, *ctx.params))
        if d_masks is not None:
            terms.append(CarafeFunction.apply(features, d_masks, *ctx.params))
        return sum(terms[1:], terms[0])

    @staticmethod
    def vmap(info, in_dims, features, masks, *params):
        b = info.batch_size
        features = _batch_first(features, in_dims[0], b)
        masks = _batch_first(masks, in_dims[1], b)
        out = CarafeFunction.apply(_fold(features), _fold(masks), *params)
        return _unfold(out, b), 0


class CarafeBackwardFunction(torch.autograd.Function):
    """``carafe_backward`` with reverse, forward and vmap rules (see the
    module docstring)."""

    @staticmethod
    def forward(grad_output, features, masks, kernel_size, group_size,
                scale_factor):
        return _ops().carafe_backward(grad_output, features, masks,
                                      kernel_size, group_size, scale_factor)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, features, masks, *params = inputs
        ctx.save_for_backward(grad_output, features, masks)
        ctx.save_for_forward(grad_output, features, masks)
        ctx.params = tuple(params)

    @staticmethod
    def backward(ctx, u, v):
        grad_output, features, masks = ctx.saved_tensors
        u = _zeros_if_none(u, features)
        v = _zeros_if_none(v, masks)
        need_grad_output, need_features, need_masks = ctx.needs_input_grad[:3]
        d_grad_output = d_features = d_masks = None
        if need_grad_output:
            d_grad_output = (
                CarafeFunction.apply(u, masks, *ctx.params) +
                CarafeFunction.apply(features, v, *ctx.params))
        if need_features or need_masks:
            d_features, d_masks = CarafeBackwardFunction.apply(
                grad_output, u, v, *ctx.params)
        return d_grad_output, d_features, d_masks, None, None, None

    @staticmethod
    def jvp(ctx, d_grad_output, d_features, d_masks, *_):
        grad_output, features, masks = ctx.saved_tensors
        terms = []
        if d_grad_output is not None:
            terms.append(
                CarafeBackwardFunction.apply(d_grad_output, features, masks,
                                             *ctx.params))
        if d_features is not None or d_masks is not None:
            terms.append(
                CarafeBackwardFunction.apply(
                    grad_output, _zeros_if_none(d_features, features),
                    _zeros_if_none(d_masks, masks), *ctx.params))
        if len(terms) == 1:
            return terms[0]
        return tuple(a + b for a, b in zip(*terms))

    @staticmethod
    def vmap(info, in_dims, grad_output, features, masks, *params):
        b = info.batch_size
        grad_output, features, masks = (_fold(_batch_first(
            x, dim,
            b)) for x, dim in zip((grad_output, features, masks), in_dims))
        grads = CarafeBackwardFunction.apply(grad_output, features, masks,
                                             *params)
        return tuple(_unfold(g, b) for g in grads), (0, 0)
