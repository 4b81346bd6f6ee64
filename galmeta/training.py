"""Training loops apart from the algorithms: early stopping, the divergence guard, and meta-training.

:class:`EarlyStopping` and :class:`DivergenceGuard` are shared by the meta-learners
(:class:`galmeta.maml_torch.MetaLearner`) and the pooled network (:class:`galmeta.baselines.PooledMLP`);
:func:`meta_train` is the loop behind ``MetaLearner.fit`` (learn2learn keeps its loops apart from its
algorithm objects in the same way).
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np

from galmeta.safe_files import exclusive_lock

__all__ = ["EarlyStopping", "DivergenceGuard", "meta_train", "validation_batches"]


class EarlyStopping:
    """Keep the state with the best validation loss, and say when ``patience`` evaluations brought nothing better.

    Examples
    --------
    >>> stopper = EarlyStopping(patience=2)
    >>> [stopper.update(loss, lambda: loss) for loss in (3.0, 2.0, 2.5, 2.2)]
    [False, False, False, True]
    >>> stopper.best, stopper.best_state
    (2.0, 2.0)
    """

    def __init__(self, patience: int | None = None):
        self.patience = patience
        self.best, self.best_state, self.bad_evaluations = math.inf, None, 0

    def update(self, value: float, state) -> bool:
        """Record one validation loss; ``state()`` is called only when it is the best so far. True: stop now."""
        if value < self.best:
            self.best, self.bad_evaluations = value, 0
            self.best_state = state()
        else:
            self.bad_evaluations += 1
        return self.patience is not None and self.bad_evaluations >= self.patience


class DivergenceGuard:
    """Watch a training loss against its first values: warn at 1,000 times them, stop at a million times.

    Raises
    ------
    FloatingPointError
        From :meth:`check`, once the loss has grown a million-fold over the median of its first ten values.
    """

    def __init__(self, warn_factor: float = 1e3, stop_factor: float = 1e6, n_reference: int = 10):
        self.warn_factor, self.stop_factor, self.n_reference = warn_factor, stop_factor, n_reference
        self.first_losses: list[float] = []
        self.warned = False

    def check(self, loss: float, iteration: int):
        if len(self.first_losses) < self.n_reference:
            self.first_losses.append(loss)
        reference = float(np.median(self.first_losses))
        if reference > 0 and loss > self.stop_factor * reference:
            raise FloatingPointError(
                f"meta-loss grew from about {reference:.3g} to {loss:.3g} by iteration {iteration}: "
                "training diverges. Lower inner_lr or meta_lr (or standardise the targets)."
            )
        if reference > 0 and loss > self.warn_factor * reference and not self.warned:
            warnings.warn(f"meta-loss grew from about {reference:.3g} to {loss:.3g} by iteration {iteration}; "
                          "training may be diverging (lower inner_lr or meta_lr)", RuntimeWarning, stacklevel=4)
            self.warned = True


def validation_batches(val_tasks):
    """One batch is four arrays; a list of batches holds sequences of four arrays."""
    first = val_tasks[0]
    return [val_tasks] if hasattr(first, "shape") else list(val_tasks)


def meta_train(learner, sample_tasks, n_iterations, val_tasks=None, eval_every=100, patience=None, checkpoint=None,
               progress=None, rng=None, on_divergence="raise"):
    """Meta-train ``learner`` (a :class:`galmeta.maml_torch.MetaLearner`): the loop behind its ``fit``.

    Parameters
    ----------
    sample_tasks : callable
        ``sample_tasks(rng, n_tasks) -> (xs, ys, xq, yq)`` (NumPy or tensors).
    n_iterations : int
        Meta-updates to run (counted from the learner's current ``iteration``, so a
        resumed learner continues).
    val_tasks : tuple or list of tuples, optional
        A fixed ``(xs, ys, xq, yq)`` batch of meta-validation tasks for early stopping, or a list of such
        batches (for example one per support size K): their losses are averaged.
    eval_every : int, default 100
    patience : int, optional
        Stop after this many evaluations without improvement; the best
        parameters are restored at the end.
    checkpoint : path, optional
        Saved every ``eval_every`` iterations and at the end (model, optimiser, config, seed, history, rng),
        with or without ``val_tasks``.
    progress : bool, optional
        Progress bar (default: on, except in batch execution; :func:`galmeta.config.progress_bar`).
    rng : numpy.random.Generator, optional
        Default: seeded from ``config.seed``.
    on_divergence : {"raise", "stop"}, default "raise"
        What to do when training diverges (below). ``"stop"`` ends training with a ``RuntimeWarning``,
        keeps the parameters with the best validation loss so far (without ``val_tasks``, or before the
        first evaluation, those it started from) and records the iteration in ``learner.diverged_at``: for
        long unattended runs such as the evaluation, which must report a diverging learner, not crash.

    Only one training at a time writes a checkpoint file: a second one is refused before it trains
    (:class:`galmeta.safe_files.LockTimeout`).

    Raises
    ------
    FloatingPointError
        When the meta-loss stops being finite, or grows a million-fold over its first values (a
        ``RuntimeWarning`` comes first, at a thousand-fold): training diverges.
    """
    if isinstance(n_iterations, bool) or not isinstance(n_iterations, (int, np.integer)) or n_iterations < 0:
        raise ValueError(f"n_iterations must be an integer >= 0, got {n_iterations!r}")
    if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
        raise ValueError(f"eval_every must be an integer >= 1, got {eval_every!r}")
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}")
    arguments = dict(val_tasks=val_tasks, eval_every=eval_every, patience=patience, checkpoint=checkpoint,
                     progress=progress, rng=rng, on_divergence=on_divergence)
    if checkpoint is None or learner.rank != 0:
        return _meta_train(learner, sample_tasks, n_iterations, **arguments)
    # one training per checkpoint file: a second one is refused before it starts, not after it trained
    with exclusive_lock(Path(str(checkpoint) + ".lock"), f"the checkpoint {checkpoint}", timeout=0):
        return _meta_train(learner, sample_tasks, n_iterations, **arguments)


def _meta_train(learner, sample_tasks, n_iterations, val_tasks, eval_every, patience, checkpoint, progress, rng,
                on_divergence):
    from galmeta.config import progress_bar

    rng = rng or np.random.default_rng(learner.config.seed + learner.iteration)
    if learner.world_size > 1:  # each rank its own shard of tasks: same streams would duplicate them
        rng = np.random.default_rng([int(rng.integers(2 ** 62)), learner.rank])
    tasks_per_rank = learner.config.meta_batch // learner.world_size
    stopper, guard = EarlyStopping(patience), DivergenceGuard()
    start = time.perf_counter()
    show = progress if learner.rank == 0 else False
    bar = progress_bar(range(int(n_iterations)), disable=None if show is None else not show,
                       desc=f"meta-train ({learner.config.algorithm})", mininterval=1.0)
    learner.diverged_at = None
    fallback = learner._state() if on_divergence == "stop" else None
    for _ in bar:
        batch = sample_tasks(rng, tasks_per_rank)
        try:
            loss = learner.step(*batch)
            guard.check(loss, learner.iteration)
        except FloatingPointError as exc:
            if on_divergence == "raise":
                raise
            learner.diverged_at = learner.iteration
            kept = "the best validation state" if stopper.best_state is not None else "the parameters it started from"
            warnings.warn(f"{exc}; training stopped, keeping {kept}", RuntimeWarning, stacklevel=3)
            stopper.best_state = stopper.best_state or fallback
            break
        learner.history["iteration"].append(learner.iteration)
        learner.history["train_loss"].append(loss)
        if val_tasks is not None and learner.iteration % eval_every == 0:
            val = float(np.mean([learner.evaluate(*batch) for batch in validation_batches(val_tasks)]))
            learner.history["val_iteration"].append(learner.iteration)
            learner.history["val_loss"].append(val)
            bar.set_postfix(loss=f"{loss:.4f}", val=f"{val:.4f}")
            if stopper.update(val, learner._state):
                break
        if checkpoint is not None and learner.iteration % eval_every == 0 and learner.rank == 0:
            learner.save(checkpoint)
    learner.seconds = time.perf_counter() - start
    if stopper.best_state is not None:
        learner._load_state(stopper.best_state)
    learner.is_fitted_ = True
    if checkpoint is not None and learner.rank == 0:
        learner.save(checkpoint)
    return learner
