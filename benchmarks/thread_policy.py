"""Meta-training throughput on a quiet machine and beside one busy process, with 1 thread and PyTorch's default.

The situation of a classroom laptop: a browser, a video call or a second notebook keep a core busy while
the course trains a small network. PyTorch's CPU threads spin while they wait for each other, so with as
many threads as cores, one busy process slows every step. galmeta therefore sets one thread
(``galmeta.config.apply_thread_policy``; ``GALMETA_THREADS`` overrides). Measured side by side in this
one run: sinusoid MAML steps (1-40-40-1, meta-batch 25, K = 10, float32, second order) with 1 and 5 inner
steps, quiet and beside one process that spins on a core.

    python benchmarks/thread_policy.py [--iterations 150]

Target (issue 24): beside one busy process, meta-training keeps at least 70% of its quiet throughput with
the library's defaults.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import torch

PYTORCH_DEFAULT_THREADS = torch.get_num_threads()  # read before galmeta applies its policy

from _common import iterations_per_second, machine_line, print_table  # noqa: E402
from maml_torch_speed import batches, galmeta_step  # noqa: E402
from galmeta.config import THREADS  # noqa: E402


def busy_process():
    """A process that keeps one core busy (pure Python, no threads of its own) until it is stopped."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150)
    args = parser.parse_args()
    library = torch.get_num_threads()
    print(machine_line())
    print(f"threads: galmeta's default {library} (GALMETA_THREADS={THREADS}), PyTorch's default "
          f"{PYTORCH_DEFAULT_THREADS}")
    data = batches("cpu")
    settings = [(f"galmeta default ({library} thread{'s' if library > 1 else ''})", library),
                (f"PyTorch default ({PYTORCH_DEFAULT_THREADS} threads)", PYTORCH_DEFAULT_THREADS)]
    rates = {}
    for busy in (False, True):
        spinner = busy_process() if busy else None
        try:
            for inner_steps in (1, 5):
                for label, threads in settings:
                    torch.set_num_threads(threads)
                    step = galmeta_step("cpu", data, inner_steps=inner_steps)
                    n = args.iterations if inner_steps == 1 else max(args.iterations // 3, 20)
                    rates[(label, inner_steps, busy)] = iterations_per_second(step, n)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    torch.set_num_threads(library)
    rows = []
    for label, _ in settings:
        for inner_steps in (1, 5):
            quiet, busy = rates[(label, inner_steps, False)], rates[(label, inner_steps, True)]
            rows.append([label, inner_steps, f"{quiet:.0f}", f"{busy:.0f}", f"{busy / quiet:.2f}"])
    print()
    print_table(["threads", "inner steps", "quiet it/s", "beside a busy process it/s", "busy / quiet"], rows)
    default_label = settings[0][0]
    worst = min(rates[(default_label, s, True)] / rates[(default_label, s, False)] for s in (1, 5))
    torch_label = settings[1][0]
    gain = min(rates[(default_label, s, True)] / rates[(torch_label, s, True)] for s in (1, 5))
    print(f"\nbeside one busy process, galmeta's default keeps {worst:.0%} of its quiet throughput (target >= 70%: "
          f"{'met' if worst >= 0.7 else 'NOT met'}); it runs {gain:.1f}x as fast as PyTorch's default there")


if __name__ == "__main__":
    main()
