"""Train a 12-instance TMS 5-2 in PyTorch, laid out as the original APD implementation lays it out,
and save its state dict as .npz for `apdspec import-target` (docs/outputs.md, "Importing a target").

This is an example of "a target trained elsewhere": apdspec never imports or runs it, and PyTorch
is not a dependency of apdspec. Run it in an environment that has torch and numpy:

    python docs/examples/train_tms_torch.py --out runs/torch_tms.npz
    apdspec import-target runs/torch_tms.npz --kind tms --out runs/torch_tms_target.npz
    apdspec run specs/tms_5_2.apd -s 'target = file("runs/torch_tms_target.npz")' -s replicates=12

The model (Elhage et al.'s toy model of superposition, as in method notes §1.1): n_instances
independent models trained side by side; per instance y = ReLU(x W W^T + b), with W of shape
(n_features, n_hidden) used row-vector style (h = x @ W) and its transpose as the tied output
layer. State dict: linear1.weight (I, F, H), linear2.weight (the same tensor, tied), b_final (I, F).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from torch import nn


class InstanceLinear(nn.Module):
    """x (batch, I, d_in) -> x @ weight (batch, I, d_out), one matrix per instance."""

    def __init__(self, n_instances: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_instances, d_in, d_out))
        nn.init.xavier_normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bid,ide->bie", x, self.weight)


class TiedTranspose(nn.Module):
    """The output layer: the transpose of another layer's weight (registered here too, so the
    state dict lists it as linear2.weight, as a tied model's does)."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bie,ide->bid", h, self.weight)


class ToyModel(nn.Module):
    def __init__(self, n_instances: int, n_features: int, n_hidden: int):
        super().__init__()
        self.linear1 = InstanceLinear(n_instances, n_features, n_hidden)
        self.linear2 = TiedTranspose(self.linear1.weight)
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear2(self.linear1(x)) + self.b_final)


def sparse_batch(batch: int, n_instances: int, n_features: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """Each feature is U[0, 1) with probability p, else 0."""
    values = torch.rand(batch, n_instances, n_features, generator=gen)
    return values * (torch.rand(batch, n_instances, n_features, generator=gen) < p)


def train(n_instances: int = 12, n_features: int = 5, n_hidden: int = 2, p: float = 0.05, steps: int = 5000,
          batch: int = 1024, lr: float = 5e-3, seed: int = 0) -> ToyModel:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = ToyModel(n_instances, n_features, n_hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / steps)  # linear decay to 0
    for step in range(steps):
        x = sparse_batch(batch, n_instances, n_features, p, gen)
        # mean over batch and features per instance, summed over instances: each instance's
        # gradient is that of an independent model
        loss = ((model(x) - x) ** 2).mean(dim=(0, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 1000 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss per instance {loss.item() / n_instances:.5f}")
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/torch_tms.npz", help="state dict as .npz")
    ap.add_argument("--instances", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = train(n_instances=args.instances, steps=args.steps, seed=args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    state = {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}
    np.savez(args.out, **state)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in state.items()))


if __name__ == "__main__":
    main()
