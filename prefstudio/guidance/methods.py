"""The personalization methods the studio offers, by name (no torch import: the CLI's parser reads them).

- "guidance": reward-guided optimisation of the seed's noise (noise_optimization.py);
- "best_of_n": the best of N seeds under the same rewards (best_of_n.py);
- "instant": one pass of the preference adapter (instant.py, adapter.py);
- "instant+guidance": Instant's image as the starting point of a shorter guidance;
- "ppd": one render with a PPD adapter in an SD/SDXL UNet (prefstudio/ppd/, docs/ppd.md).
"""
METHODS = ("guidance", "best_of_n", "instant", "instant+guidance", "ppd")
DEFAULT_ITERATIONS = 30
CHAIN_ITERATIONS = 10  # the short guidance after Instant
