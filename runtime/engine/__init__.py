"""The numerical engine: target models, data, target training and the APD decomposition itself.

models (target forward passes), data (input distributions and labels), seeding (named random
streams), train_target, gated (the hand-coded gated-function target), apd (components and their
forward pass), attributions, fused (closed-form loss kernels with their own gradients), kernels
(BLAS and in-place helpers, FastAdam), optim (schedules, Adam), revive (dead-component revival) and
decompose (the APD training loop). May import runtime.spec only.
"""
