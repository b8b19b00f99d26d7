"""Decomposition methods, one subpackage each (the engine's APD/SPD move here in the restructuring)."""
