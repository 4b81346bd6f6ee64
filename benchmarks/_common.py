"""Helpers shared by the benchmark scripts (timing loops, table printing)."""
from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch


def machine_line() -> str:
    threads = torch.get_num_threads()
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__} ({threads} threads), numpy {np.__version__}")


def iterations_per_second(step, n_iterations: int, warmup: int = 5, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of ``n_iterations`` calls of ``step()`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        step()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_iterations):
            step()
        best = max(best, n_iterations / (time.perf_counter() - start))
    return best


def print_table(header, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
