"""SGD stepped over dp's flat buffers (FlatSGD) against torch.optim.SGD: bit for bit, with
every SGD option, after a loaded state, and falling back to ``opt.step()`` where it does
not apply."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from mixfleet.train.parallel.strategy import DataParallel


def _model() -> nn.Module:
    torch.manual_seed(0)  # odd sizes: the flat update crosses every tensor boundary
    return nn.Sequential(nn.Linear(7, 13), nn.Tanh(), nn.Linear(13, 5), nn.Tanh(),
                         nn.Linear(5, 3))


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 7, generator=g), torch.randn(16, 3, generator=g))
            for _ in range(n)]


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).sum() / 16


def _reference(make_opt: Callable[[Any], torch.optim.Optimizer], steps: int,
               between: Callable[[int, torch.optim.Optimizer], None] | None = None
               ) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _model()
    opt = make_opt(model.parameters())
    for i, batch in enumerate(_batches(steps)):
        opt.zero_grad(set_to_none=True)
        _loss(model, batch).backward()
        for g in opt.param_groups:
            g["lr"] = 0.05 / (1 + i)  # a schedule: the flat step reads lr each step
        opt.step()
        if between is not None:
            between(i, opt)
    return model, opt


def _flat(make_opt: Callable[[Any], torch.optim.Optimizer], steps: int,
          between: Callable[[int, torch.optim.Optimizer], None] | None = None
          ) -> tuple[nn.Module, torch.optim.Optimizer, DataParallel, list[int]]:
    model = _model()
    opt = make_opt(model.parameters())
    st = DataParallel(model, device=torch.device("cpu"), world=1, group=None)
    st.bind(0)
    calls = []  # the steps that went through opt.step()
    torch_step = opt.step

    def counted(*a: Any, **k: Any) -> Any:
        calls.append(i)
        return torch_step(*a, **k)

    opt.step = counted  # type: ignore[method-assign]
    for i, batch in enumerate(_batches(steps)):
        st.zero_grad()
        _loss(model, batch).backward()
        for g in opt.param_groups:
            g["lr"] = 0.05 / (1 + i)
        st.optimizer_step(opt)
        if between is not None:
            between(i, opt)
    return model, opt, st, calls


def _same(a: nn.Module, oa: torch.optim.Optimizer, b: nn.Module,
          ob: torch.optim.Optimizer) -> None:
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name, v in sa[k].items():
            assert torch.equal(v, sb[k][name]), (k, name)


@pytest.mark.parametrize("options", [
    {"momentum": 0.9, "weight_decay": 1e-3},
    {"momentum": 0.9, "weight_decay": 0.0, "dampening": 0.1},
    {"momentum": 0.8, "weight_decay": 1e-2, "nesterov": True},
    {"momentum": 0.0, "weight_decay": 1e-3},
])
def test_flat_sgd_is_torch_sgd_bit_for_bit(options: dict[str, Any]) -> None:
    """Only the first step runs opt.step() (it creates the momentum buffers); every later
    step is the flat update, and weights and momentum equal torch.optim.SGD's exactly."""
    def make(p: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD(p, lr=0.05, **options)

    ref, ref_opt = _reference(make, 25)
    model, opt, st, calls = _flat(make, 25)
    _same(ref, ref_opt, model, opt)
    assert calls == ([0] if options["momentum"] else [])
    assert st.flat_sgd is not None and st.flat_sgd.linked(opt)
    for p in model.parameters():  # the parameters live in the flat buffer
        assert st.weights.data_ptr() <= p.data_ptr() < st.weights.data_ptr() + st.weights.nbytes


def test_flat_sgd_takes_a_loaded_state_back_into_its_buffer() -> None:
    """A state dict loaded into the optimizer replaces the momentum tensors: the next step
    copies them into the flat buffer (a new generation, so snapshots map the new tensors)
    and training goes on exactly as torch.optim.SGD's does."""
    def make(p: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3)

    def reload(i: int, opt: torch.optim.Optimizer) -> None:
        if i == 9:
            sd = copy.deepcopy(opt.state_dict())
            for s in sd["state"].values():
                s["momentum_buffer"].mul_(0.5)  # a different state than the one it had
            opt.load_state_dict(sd)

    ref, ref_opt = _reference(make, 20, reload)
    model, opt, st, calls = _flat(make, 20, reload)
    _same(ref, ref_opt, model, opt)
    assert calls == [0]  # the loaded buffers were linked without a torch step
    assert st.flat_sgd is not None and st.flat_sgd.generation == 2
    gen = st.state_generation(opt)
    named = dict(st.snapshot_tensors(opt))
    mom = st.flat_sgd._momentum
    assert mom is not None and gen == 2
    for k, v in named.items():
        if k.endswith("momentum_buffer"):
            assert mom.data_ptr() <= v.data_ptr() < mom.data_ptr() + mom.nbytes, k


@pytest.mark.parametrize("case", ["adamw", "two groups", "moved parameter"])
def test_flat_sgd_falls_back_to_opt_step(case: str) -> None:
    """Where the flat step does not apply, every step runs opt.step() and the result is
    the optimizer's own."""
    def make(p: Any) -> torch.optim.Optimizer:
        if case == "adamw":
            return torch.optim.AdamW(p, lr=0.01)
        p = list(p)
        if case == "two groups":
            return torch.optim.SGD([{"params": p[:2]}, {"params": p[2:], "weight_decay": 0.1}],
                                   lr=0.05, momentum=0.9)
        return torch.optim.SGD(p, lr=0.05, momentum=0.9)

    def move(i: int, opt: torch.optim.Optimizer) -> None:
        if case == "moved parameter" and i == 4:  # no longer a view of the flat weights
            p = opt.param_groups[0]["params"][0]
            p.data = p.data.clone()

    ref, ref_opt = _reference(make, 12, move)
    model, opt, st, calls = _flat(make, 12, move)
    _same(ref, ref_opt, model, opt)
    assert calls == (list(range(12)) if case != "moved parameter"
                     else [0, *range(5, 12)])
