"""APD on the gated network: the residual network's kernels (targets/resid_mlp/apd_kernels.py) with
the gated network's conventions: kaiming-uniform component init and act-recon on every layer's
pre-bias output (the reference's)."""
from __future__ import annotations

import dataclasses

from ...methods.apd.kinds import APD_KINDS
from ..resid_mlp.apd_kernels import RESIDUAL

APD_KINDS["gated"] = dataclasses.replace(RESIDUAL, init="kaiming_uniform")
