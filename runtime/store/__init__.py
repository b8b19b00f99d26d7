"""Files: target files and .npz arrays (files.py), the run directory (rundir.py: RunResult, atomic
writes, the lock, load_run) and full-state checkpoints for exact resume (checkpoint.py). May import
runtime.spec and runtime.engine.
"""
