"""MAM models under DistributedDataParallel (gloo, CPU, 2 processes).

Each rank trains on its half of every batch; DDP averages the gradients, so
with a mean-reduced loss the gradients and the trained weights must equal a
single-process run on the concatenated batch. The model mixes MAM and MAC
layers, carries torch.nn.utils.prune masks and goes through the whole
VanishingContribution schedule (blended and pure MAM steps).
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F

import mamext.prune
from mamext.nn import MAMLinear, VanishingContribution

WORLD = 2
STEPS = 4
BATCH = 12  # per step, split evenly over the ranks

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def _build():
    torch.manual_seed(0)
    model = nn.Sequential(MAMLinear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.Tanh(), MAMLinear(8, 3)).double()
    mamext.prune.prune_model(model, 0.5)
    vc = VanishingContribution(model, steps=STEPS - 1, schedule="linear")
    return model, vc


def _data():
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(STEPS, BATCH, 6, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 3, (STEPS, BATCH), generator=g)
    return xs, ys


def _train(model, vc, xs, ys, net=None):
    """Returns the per-step gradients of every parameter and the betas used."""
    net = net if net is not None else model
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    grads, betas = [], []
    for x, y in zip(xs, ys):
        betas.append(float(model[0].beta))
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
        opt.step()
        vc.step()
    return grads, betas


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        model, vc = _build()
        ddp = nn.parallel.DistributedDataParallel(model)
        xs, ys = _data()
        per = BATCH // WORLD
        grads, betas = _train(model, vc, xs[:, rank * per:(rank + 1) * per], ys[:, rank * per:(rank + 1) * per],
                              net=ddp)
        torch.save({"grads": grads, "betas": betas, "state": model.state_dict()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_matches_single_process_on_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)

    model, vc = _build()
    xs, ys = _data()
    grads, betas = _train(model, vc, xs, ys)
    assert betas == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0], abs=1e-7)  # blended and pure MAM steps
    assert all(m._mac_active is False for m in model.modules() if isinstance(m, MAMLinear))
    state = model.state_dict()
    assert "0.weight_mask" in state and "4.weight_orig" in state

    for rank in range(WORLD):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        assert res["betas"] == betas
        assert len(res["grads"]) == STEPS
        for step, (got, want) in enumerate(zip(res["grads"], grads)):
            assert set(got) == set(want)
            for name in want:
                torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12,
                                           msg=lambda m: f"rank {rank} step {step} grad {name}: {m}")
        for name, value in state.items():
            torch.testing.assert_close(res["state"][name], value, rtol=1e-10, atol=1e-12,
                                       msg=lambda m: f"rank {rank} trained {name}: {m}")
    # The masks held: pruned connections are still zero after training.
    for i in (0, 2, 4):
        layer = model[i]
        assert torch.all((layer.weight_orig * layer.weight_mask)[layer.weight_mask == 0] == 0)
        assert torch.all(grads[-1][f"{i}.weight_orig"][layer.weight_mask == 0] == 0)
