"""Putting it together: run one experiment (runner), restarts (several inits, keep the best),
sweeps over many (sweep), and step timing (bench). The top layer: may import every subpackage.
"""
