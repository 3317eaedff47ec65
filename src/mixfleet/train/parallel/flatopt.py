"""SGD stepped over ``dp``'s flat buffers: a few whole-model operations instead of a few per
parameter tensor.

Under ``dp`` the gradients are views of one flat buffer (:class:`~mixfleet.train.parallel.strategy.
DataParallel`), and so are the weights. Once the optimizer's momentum buffers are views of
one more flat buffer, :class:`FlatSGD` runs ``torch.optim.SGD``'s update (weight decay,
momentum, dampening, Nesterov) as three or four operations on the whole model, the way
Megatron's contiguous buffers and apex's multi-tensor optimizers batch them; on the CPU,
where ``torch.optim.SGD`` runs one loop over the tensors, its step costs ~20 us instead of
~90 us for a 38k-parameter CNN. Every element goes through the same operations as in
``torch.optim.SGD`` in the same order, so the weights are bit-identical to it (the trainer
overhead benchmark compares them every round).

The optimizer stays a ``torch.optim.SGD``: its state dict, checkpoints and snapshots are
unchanged (the momentum buffers are still ``state[p]["momentum_buffer"]``, now views). The
first step runs ``opt.step()`` itself (it creates the momentum buffers); :meth:`FlatSGD.link`
then moves them into the flat buffer, and does the same with the buffers a loaded state dict
puts in their place (before the next step or snapshot). Anything this does not cover
(another optimizer, several parameter groups, ``maximize``, a tensor learning rate) just
runs ``opt.step()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

__all__ = ["FlatSGD"]


class FlatSGD:
    """``torch.optim.SGD``'s step over flat ``weights`` and ``grads`` (``params`` are views of
    ``weights`` and their ``.grad`` views of ``grads``, in order)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], weights: torch.Tensor,
                 grads: torch.Tensor) -> None:
        self.params, self.weights, self.grads = list(params), weights, grads
        ends = list(itertools.accumulate(p.numel() for p in self.params))
        self._starts = starts = [0, *ends[:-1]]
        size = weights.element_size()
        if (weights.dtype != grads.dtype or not ends
                or not ends[-1] == weights.numel() == grads.numel()):
            raise ValueError("FlatSGD: weights and grads must be flat buffers of one dtype "
                             "holding every parameter")
        # where each parameter and its gradient must stay for the flat step to apply
        self._ptrs = [weights.data_ptr() + s * size for s in starts]
        self._gptrs = [grads.data_ptr() + s * size for s in starts]
        self._bufs: list[torch.Tensor] = []  # the momentum buffers' views, when linked
        self._opt: torch.optim.Optimizer | None = None
        self._momentum: torch.Tensor | None = None
        self._tmp: torch.Tensor | None = None  # for weight decay and Nesterov (as needed)
        self.generation = 0  # counts the times link() replaced the optimizer's tensors

    def _eligible(self, opt: torch.optim.Optimizer) -> bool:
        if type(opt) is not torch.optim.SGD or len(opt.param_groups) != 1:
            return False
        g = opt.param_groups[0]
        ps = g["params"]
        return (len(ps) == len(self.params)
                and all(a is b for a, b in zip(ps, self.params, strict=True))
                and not g["maximize"] and not g.get("differentiable") and not g.get("fused")
                and not isinstance(g["lr"], torch.Tensor)
                and not isinstance(g["weight_decay"], torch.Tensor)
                and all(p.dtype == self.weights.dtype for p in ps)
                and [p.data_ptr() for p in ps] == self._ptrs
                and [-1 if p.grad is None else p.grad.data_ptr() for p in ps] == self._gptrs)

    def linked(self, opt: torch.optim.Optimizer) -> bool:
        """The optimizer's state is (still) the flat buffers: the flat step applies."""
        if opt is not self._opt or (opt.param_groups[0]["momentum"] != 0) != bool(self._bufs):
            return False
        st = opt.state
        for p, ptr, gptr in zip(self.params, self._ptrs, self._gptrs, strict=True):
            grad = p.grad
            if p.data_ptr() != ptr or grad is None or grad.data_ptr() != gptr:
                return False
        for p, b in zip(self.params, self._bufs, strict=False):  # none without momentum
            s = st.get(p)
            if s is None or s.get("momentum_buffer") is not b:
                return False
        return True

    def link(self, opt: torch.optim.Optimizer) -> bool:
        """Make the momentum buffers views of one flat buffer (their values copied in) and
        remember ``opt``; False (nothing changed) when ``opt`` is not covered or has no
        state yet (its first step)."""
        if self.linked(opt):
            return True
        self._opt = None
        if not self._eligible(opt):
            return False
        g, st = opt.param_groups[0], opt.state
        self._bufs = []
        if g["momentum"] != 0:
            if any(st.get(p, {}).get("momentum_buffer") is None for p in self.params):
                return False
            if self._momentum is None:
                self._momentum = torch.empty_like(self.weights)
            with torch.no_grad():
                for p, off in zip(self.params, self._starts, strict=True):
                    view = self._momentum[off: off + p.numel()].view_as(p)
                    view.copy_(st[p]["momentum_buffer"])
                    st[p]["momentum_buffer"] = view
                    self._bufs.append(view)
            self.generation += 1
        self._opt = opt
        return True

    def step(self, opt: torch.optim.Optimizer) -> None:
        """One optimizer step: the flat update when linked, else ``opt.step()`` and link."""
        if not self.linked(opt):
            if not self.link(opt):
                opt.step()
                self.link(opt)
                return
        g = opt.param_groups[0]
        lr, wd, m = g["lr"], g["weight_decay"], g["momentum"]
        if self._tmp is None and (wd != 0 or g["nesterov"]):
            self._tmp = torch.empty_like(self.grads)
        with torch.no_grad():
            grad = self.grads
            if wd != 0:
                grad = torch.add(grad, self.weights, alpha=wd, out=self._tmp)
            if m != 0:
                buf = self._momentum
                assert buf is not None
                buf.mul_(m).add_(grad, alpha=1 - g["dampening"])
                if g["nesterov"]:
                    grad = torch.add(grad, buf, alpha=m, out=self._tmp)
                else:
                    grad = buf
            self.weights.add_(grad, alpha=-lr)
