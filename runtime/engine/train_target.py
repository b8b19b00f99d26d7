"""Training the TMS and residual-MLP targets (notes §1.1, §1.2, §6), and measuring them.

Differences from the reference, on purpose:
- The reference TMS trainer ignores the config's lr and always uses 5e-3 with linear decay. We
  honour the spec's optimizer and schedule; the paper spec files set lr 5e-3, linear, AdamW
  weight decay 0.01, which reproduces the reference.
- Losses are summed (not averaged) over replicates, so each replicate's gradient is exactly that of
  an independent run (Adam is invariant to the 1/I the reference's resid-MLP mean introduces, up
  to eps).
"""
from __future__ import annotations

from typing import Callable

import autograd.numpy as anp
import numpy as np
from autograd import grad_and_aux

from .decompose import Interrupted, NonFiniteError
from .data import feature_importance, file_has_labels, label_coefficients, sample_batch, sample_inputs
from .models import n_outputs, target_forward, trainable_target_params
from .optim import Adam, lr_at
from .registry import model_of
from ..spec import Experiment, Target, Training, kind_spec


def replicate_loss(arch: Target, params: dict, x, labels, importance):
    """(I,) training loss per replicate, mean over batch and features (autograd-traceable): the
    kind's (models.Model.train_loss)."""
    return model_of(arch).train_loss(arch, params, x, labels, importance)


def _training(exp: Experiment, arch: Target, train: Training | None) -> Training:
    train = train if train is not None else exp.train
    labels = kind_spec(arch.kind).labels
    if train is None:
        if labels == ("identity",):
            return Training(labels="identity")  # labels that need nothing else
        raise ValueError("this target needs its Training (labels, label coefficients); pass train=...")
    if train.labels is None:  # unresolved spec: same defaults as spec.resolve
        import dataclasses

        train = dataclasses.replace(train, labels=labels[0])
    return train


TARGET_HINT = ("the target's training diverged: lower target.train.optimizer's lr (e.g. by 10x), or add warmup to "
               "target.train.schedule")


def train_target(exp: Experiment, arch: Target, params: dict, rng_data: np.random.Generator,
                 log: Callable[[int, dict], None] | None = None,
                 progress: Callable[[int, int, dict], None] | None = None,
                 stop: Callable[[], int | None] | None = None) -> tuple[dict, list[dict]]:
    """Train the target's trainable parameters with AdamW (exp.train: optimizer, schedule, steps,
    batch); W_E / W_U and anything else not in `models.trainable_target_params` stay exactly fixed.

    Returns (new params dict, history); the input arrays are not modified. `log(step, entry)` is
    called every train.log_every steps and after the last step; an entry holds the step, the LR
    and the loss of that step's batch (before the update) per replicate ("loss") and averaged
    ("loss_mean"). Everything stays in the parameters' dtype. `progress(step, steps, entry)` is
    called every step (it rate-limits itself); `stop()` is asked before every step, and a signal
    number it returns raises engine.decompose.Interrupted (phase "target")."""
    if not kind_spec(arch.kind).trained:
        raise ValueError(f"{arch.kind} targets are hand-coded (their model's `build`), not trained")
    if exp.train is None:
        raise ValueError("the experiment has no training section (train = None)")
    train = _training(exp, arch, exp.train)
    names = trainable_target_params(arch)
    params = {k: np.array(v, copy=True) for k, v in params.items()}
    dtype = params[names[0]].dtype
    I = params[names[0]].shape[0]
    trainable = {k: params[k] for k in names}  # same arrays: Adam's in-place updates land in params
    frozen = {k: v for k, v in params.items() if k not in trainable}
    coeffs = label_coefficients(arch, train, I)
    importance = feature_importance(n_outputs(arch), train.importance, dtype)

    def objective(tp, x, labels):
        full = dict(frozen)
        for k in names:
            full[k] = tp[k]
        per = replicate_loss(arch, full, x, labels, importance)
        return anp.sum(per), per

    grad_fn = grad_and_aux(objective)
    opt = Adam(trainable, train.optimizer)
    history: list[dict] = []
    steps, every = train.steps, max(1, train.log_every)
    for step in range(steps):
        signum = stop() if stop is not None else None
        if signum:
            raise Interrupted(signum, step, phase="target")
        lr = lr_at(step, steps, train.optimizer.lr, train.schedule)
        x, labels = sample_batch(arch, exp.data, train, coeffs, I, train.batch, rng_data, dtype)
        grads, per = grad_fn(trainable, x, labels)
        bad = np.flatnonzero(~np.isfinite(np.asarray(per, dtype=np.float64)))
        if bad.size:  # a diverged target would make every later number meaningless
            raise NonFiniteError("the target's training loss", int(bad[0]), step, float(np.asarray(per)[bad[0]]),
                                 hint=TARGET_HINT)
        # autograd may promote to float64 (e.g. through max); Adam state must stay in `dtype`.
        opt.step(trainable, {k: np.asarray(g, dtype=dtype) for k, g in grads.items()}, lr)
        if step % every == 0 or step == steps - 1:
            per = np.asarray(per, dtype=np.float64)
            entry = {"step": step, "lr": float(lr), "loss": per.tolist(), "loss_mean": float(per.mean())}
            history.append(entry)
            if log is not None:
                log(step, entry)
        if progress is not None:
            progress(step + 1, steps, {"loss": float(np.mean(per))})
    return params, history


def evaluate_target(exp: Experiment, arch: Target, params: dict, rng: np.random.Generator, batches: int = 10,
                    extras: dict | None = None, train: Training | None = None,
                    batch: int | None = None) -> np.ndarray:
    """(I,) loss per replicate averaged over `batches` fresh batches of exp.data.

    Trained kinds: the training loss against the labels (plain MSE when importance is 1); `train`
    defaults to exp.train. Hand-coded kinds: MSE of the network output against its true labels
    (`Model.true_labels`, from `extras`). A data file's labels, when it has them, are the labels."""
    I = next(iter(params.values())).shape[0]
    dtype = params[next(iter(params))].dtype
    if not kind_spec(arch.kind).trained:
        model = model_of(arch)
        B = batch or exp.decompose.batch
        total = np.zeros(I)
        from_file = file_has_labels(exp.data)
        for _ in range(batches):
            if from_file:
                x, labels = sample_batch(arch, exp.data, Training(), np.ones((I, 0)), I, B, rng, dtype)
            else:
                x = sample_inputs(arch, exp.data, I, B, rng, dtype)
                labels = model.true_labels(arch, extras or {}, x)
            if labels is None:
                raise ValueError(f"evaluating a {arch.kind} target needs the extras it was built with")
            y = np.asarray(target_forward(arch, params, x).y, dtype=np.float64)
            total += np.mean((y - labels) ** 2, axis=(1, 2))
        return total / batches
    train = _training(exp, arch, train)
    B = batch or train.batch
    coeffs = label_coefficients(arch, train, I)
    importance = feature_importance(n_outputs(arch), train.importance, dtype)
    total = np.zeros(I)
    for _ in range(batches):
        x, labels = sample_batch(arch, exp.data, train, coeffs, I, B, rng, dtype)
        total += np.asarray(replicate_loss(arch, params, x, labels, importance), dtype=np.float64)
    return total / batches
