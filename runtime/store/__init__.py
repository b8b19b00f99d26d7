"""Files: target checkpoints and .npz arrays (files.py) and the run directory (rundir.py: RunResult,
atomic JSON, load_run). May import runtime.spec and runtime.engine.
"""
