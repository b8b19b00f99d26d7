"""Train a researcher's own MLP, an nn.Sequential, in PyTorch, and save its state dict for
`apdspec import-target --kind mlp` (README, "Decompose your own model").

This is an example of "a model trained elsewhere": apdspec never imports or runs it, and PyTorch is
not a dependency of apdspec. Run it in an environment that has torch and numpy:

    python docs/examples/train_mlp_torch.py --out runs/my_mlp.npz
    apdspec import-target runs/my_mlp.npz --kind mlp --activation relu --out runs/my_mlp_target.npz
    apdspec run specs/mlp.apd -s 'target = file("runs/my_mlp_target.npz")' --out runs/my_mlp_apd
    apdspec run specs/spd_mlp.apd -s 'target = file("runs/my_mlp_target.npz")' --out runs/my_mlp_spd

The model: nn.Sequential(Linear(10, 6), ReLU(), Linear(6, 10)), trained to reproduce sparse inputs
(each of 10 features uniform in [0, 1) with probability 0.05, else 0) through its 6 ReLU neurons,
so it must hold more features than it has neurons. Its state dict is 0.weight (6, 10), 0.bias (6,),
2.weight (10, 6), 2.bias (10,) in nn.Linear's (out, in) layout; the ReLU between the layers is not
in it, which is why import-target asks for --activation. The data are those specs/mlp.apd and
specs/spd_mlp.apd decompose it on (their data block).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from torch import nn


def sparse_batch(batch: int, features: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """Each feature is U[0, 1) with probability p, else 0."""
    values = torch.rand(batch, features, generator=gen)
    return values * (torch.rand(batch, features, generator=gen) < p)


def train(features: int = 10, hidden: int = 6, p: float = 0.05, steps: int = 10_000, batch: int = 1024,
          lr: float = 5e-3, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, features))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / steps)  # linear decay to 0
    for step in range(steps):
        x = sparse_batch(batch, features, p, gen)
        loss = ((model(x) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 2000 == 0 or step == steps - 1:
            print(f"step {step:6d}  loss {loss.item():.6f}")
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/my_mlp.npz", help="state dict as .npz (a .pt beside it too)")
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = train(steps=args.steps, seed=args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    state = {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}
    np.savez(args.out, **state)
    torch.save(model.state_dict(), os.path.splitext(args.out)[0] + ".pt")  # import-target reads it where torch is
    print(f"wrote {args.out}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in state.items()))


if __name__ == "__main__":
    main()
