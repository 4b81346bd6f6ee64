"""The same seed gives the same numbers whatever threads the machine offers.

Thread count changes the order of floating-point sums, and chaotic meta-training amplifies the difference
(a retrained seed once landed far from the reported spread). galmeta fixes PyTorch's intra-op threads in
one place (``galmeta.config.apply_thread_policy``), so the environment variables that usually set threads
change nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json, numpy as np, torch
from galmeta import maml_numpy as mn, maml_torch as mt
from galmeta.config import seed_everything
from galmeta.sinusoid import task_sampler
seed_everything(3)
init = mn.init_mlp((1, 64, 64, 1), np.random.default_rng(3), dtype=np.float32)
learner = mt.MetaLearner(mt.MLP.from_numpy(init), algorithm="maml", inner_steps=2, meta_batch=16, device="cpu")
sample = task_sampler(16, 10, 10, dtype=np.float32)
learner.fit(lambda rng, n: sample(rng), 40, progress=False, rng=np.random.default_rng(4))
weights = np.concatenate([p.detach().numpy().ravel() for p in learner.model.parameters()])
print(json.dumps({"threads": torch.get_num_threads(), "weights": weights.astype(float).tolist()}))
"""


def _train(extra_env):
    env = {k: v for k, v in os.environ.items() if k not in ("GALMETA_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env={**env, **extra_env},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_seed_gives_identical_weights_whatever_the_thread_variables_say():
    first = _train({"OMP_NUM_THREADS": "1"})
    second = _train({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    assert first["threads"] == second["threads"] == 1
    assert first["weights"] == second["weights"], "the same seed must give bit-identical weights"
