"""VPD's settings (what a spec's `decompose` block will nest) and the run-level config the trainer
takes until the spec language defines VPD.

Defaults are the authors' TMS 5-2 toy config (notes §7; goodfire-ai/param-decomp
`experiments/tms/configs/tms_5-2.yaml`) wherever a single default is needed. Coefficients and
`adv_fraction` take a float or a `schedules.Schedule` (evaluated at step / (steps - 1)).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .schedules import Schedule, cosine

ROUTINGS = ("uniform_k_subset", "all")


@dataclass(frozen=True)
class VpdSettings:
    C: int = 20  # §7 "sites x C": rank-one subcomponents per site (each site also has the delta channel)
    ci_hidden: tuple[int, ...] = (50,)  # §2/§7 "CI hidden": hidden widths of each site's CI MLP (exact-erf GELU)
    lower_leak: float = 0.01  # §2 alpha of the lower squashing's backward (masks)
    upper_leak: float = 0.01  # §2 alpha of the upper squashing above 1 (sparsity penalty)
    delta_channel: bool = True  # §1 the (C+1)-th maskable channel x @ (W - V U); False: no delta path
    routing: str = "uniform_k_subset"  # §1 routing of stochastic rows: k ~ U{1..n_sites} sites masked, or "all"
    adv_fraction: float | Schedule = 0.5  # §3 probability that a batch row is adversarial (persistent sources)
    n_warmup: int = 2  # §4 PPGD warmup ascents per step (components and CI detached)
    source_lr: float = 0.01  # §4 source Adam lr (constant after the warmup)
    source_beta1: float = 0.01  # §4 source Adam beta1
    source_beta2: float = 0.99  # §4 source Adam beta2
    source_eps: float = 1e-8  # §4 source Adam eps (added after the sqrt)
    source_warmup: float = 0.025  # §4 fraction of training over which the source lr rises linearly from 0
    g_start: float = 1.0  # §3 g of the smooth L0 at the start of training
    g_end: float = 0.01  # §3 g at the end (linear anneal)
    normalize_at_one: bool = False  # §3 multiply phi_g by (1 + g^2) so that c = 1 costs 1 for every g
    imp_coeff: float | Schedule = 8e-4  # §3/§7 "imp": coefficient of activity = sum f[s, c]
    freq_coeff: float | Schedule = 4e-4  # §3/§7 "freq": coefficient of sum f log2(1 + a' f)
    freq_reference: float = 32768.0  # §3 a', the frequency penalty's reference datapoint count
    recon_coeff: float | Schedule = 1.0  # §3 coefficient of the merged stochastic/adversarial reconstruction
    faithfulness_coeff: float | Schedule = 1.0  # §3 coefficient of mean_s ||W_s - V_s U_s||^2 / ||W_s||^2
    faithfulness_warmup_steps: int = 200  # §3 AdamW steps on faithfulness alone before the loop (0: off)
    faithfulness_warmup_lr: float = 1e-2  # §3 lr of that warmup
    faithfulness_warmup_weight_decay: float = 0.0  # §3 AdamW weight decay of that warmup (authors' yaml: 0)
    grad_clip_norm: float | None = 1.0  # §4 global gradient-norm clip of V, U per replicate (None: off)
    ci_grad_clip_norm: float | None = 1.0  # §4 the same for the CI MLPs (authors' toy yaml clips both at 1)
    eval_pgd_steps: int = 20  # §5 sign-gradient steps of the evaluation adversary
    eval_pgd_step_size: float = 0.1  # §5 its step size

    def __post_init__(self):
        if self.routing not in ROUTINGS:
            raise ValueError(f"unknown routing {self.routing!r}; known: {', '.join(ROUTINGS)}")
        if self.C < 1 or self.n_warmup < 0 or self.faithfulness_warmup_steps < 0:
            raise ValueError("C must be >= 1, n_warmup and faithfulness_warmup_steps >= 0")
        object.__setattr__(self, "ci_hidden", tuple(int(h) for h in self.ci_hidden))


@dataclass(frozen=True)
class VpdRun:
    """What `VpdTrainer` needs besides the target and the data: the integrator maps the experiment
    onto it (steps, batch, replicates, dtype, seed from the experiment; lr from its optimizer)."""

    settings: VpdSettings = field(default_factory=VpdSettings)
    steps: int = 20_000  # §7 training updates (the trainer's step `steps` only evaluates and logs)
    batch: int = 4096  # §7 rows per step; the persistent sources have this many rows
    lr: float = 1e-3  # §4/§7 peak lr of V, U and the CI MLPs (AdamW, betas 0.9/0.999, wd 0)
    schedule: Schedule = field(default_factory=lambda: cosine(1.0, 0.1))  # §4 lr multiplier: cosine to 0.1x
    replicates: int = 1  # independent decompositions trained as one vectorised model (leading axis I)
    dtype: str = "float32"  # float32 | float64
    seed: int = 0  # root of the named random streams "vpd_sources" and "vpd_masks" (seeding.py)
