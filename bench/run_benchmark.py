"""PrefBench in one command: data set, preference prediction, personalized generation, speed.

    python bench/run_benchmark.py            # full: writes docs/benchmark_results.md (+ PNGs in docs/images/)
    python bench/run_benchmark.py --tiny     # CI smoke version: a few users and images, < 1 min

The harness is the installed research package (prefstudio_research.prefbench; `pip install -e .`);
this script only runs it. See bench/README.md for the data set and protocol.
"""
import sys

from prefstudio_research.prefbench.run import main

if __name__ == "__main__":
    sys.exit(main())
