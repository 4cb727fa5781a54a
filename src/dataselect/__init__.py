"""dataselect: pick the best instruction-tuning data from pools of millions of samples.

Data flows one way: pool -> embed -> store -> index -> select -> export.
"""

__version__ = "0.1.0"
