import os
import sys

# Single-threaded BLAS: the test models are tiny, and 2-thread BLAS is slower on them.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
sys.path.insert(0, os.path.dirname(__file__))
