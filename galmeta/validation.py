"""The input rules of both learners (NumPy and PyTorch), in one place, with messages that name the argument."""
from __future__ import annotations

import numpy as np

__all__ = ["MAX_ABS_VALUE", "check_task_batch", "check_task_array", "check_inner", "check_steps"]


def check_task_batch(d_in, d_out, arrays, finite=lambda a: bool(np.all(np.isfinite(a)))):
    """The rules every learner (NumPy and PyTorch) applies to a batch of tasks, in one place.

    Parameters
    ----------
    d_in, d_out : int or None
        Input and output width of the network (None: not checked, for a generic module).
    arrays : dict
        Name (``xs``, ``ys``, ``xq``, ``yq``) -> array or tensor of shape ``(tasks, points, features)``.
    finite : callable
        ``finite(array) -> bool``: whether every entry is finite.

    Raises
    ------
    ValueError
        Naming the array and what is wrong with it.
    """
    n_tasks = None
    for name, value in arrays.items():
        shape = tuple(value.shape)
        if len(shape) != 3:
            raise ValueError(f"{name} must have shape (tasks, points, features); got shape {shape}")
        want = d_in if name.startswith("x") else d_out
        if want is not None and shape[2] != want:
            raise ValueError(f"{name} has {shape[2]} features in its last axis but the network expects {want}")
        if n_tasks is None:
            n_tasks = shape[0]
        elif shape[0] != n_tasks:
            raise ValueError(f"{name} has {shape[0]} tasks but the first array has {n_tasks}")
        if shape[0] == 0:
            raise ValueError(f"{name} has no tasks; pass at least one")
        if shape[1] == 0:
            raise ValueError(f"{name} has no points; each task needs at least one support and one query point")
        if not finite(value):
            raise ValueError(f"{name} contains NaN or inf; clean or impute the data first (galmeta.tasks)")
    for sx, sy in (("xs", "ys"), ("xq", "yq")):
        if sx in arrays and sy in arrays and arrays[sx].shape[1] != arrays[sy].shape[1]:
            raise ValueError(f"{sx} has {arrays[sx].shape[1]} points per task but {sy} has {arrays[sy].shape[1]}")


#: The largest absolute value a task array may hold, in both learners. Inputs and targets of the course are
#: standardised or magnitudes (|value| < 100); far larger values overflow the network's float32 arithmetic
#: (PyTorch) or give finite nonsense (NumPy: a 1e30 input gave a loss of 1e229).
MAX_ABS_VALUE = 1e6


def check_task_array(name: str, value):
    """The value rules of every learner, checked before any cast: real numbers, finite, ``|value| <= 1e6``.

    ``value`` is a NumPy array (or array-like) or a PyTorch tensor; ``name`` is the argument's name
    for the message. Returns the NumPy array (or the tensor unchanged).

    Raises
    ------
    TypeError
        For complex, boolean or non-numeric values.
    ValueError
        For NaN, inf, or values beyond :data:`MAX_ABS_VALUE`.
    """
    if type(value).__module__.startswith("torch"):
        if value.is_complex() or str(value.dtype) == "torch.bool":
            raise TypeError(f"{name} must hold real numbers (floating point or integer), got dtype {value.dtype}")
        largest = float(value.detach().abs().max()) if value.numel() else 0.0
    else:
        value = np.asarray(value)
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers (floating point or integer), got dtype {value.dtype}")
        with np.errstate(all="ignore"):
            largest = float(np.abs(value.astype(np.float64, copy=False)).max()) if value.size else 0.0
    if not np.isfinite(largest):
        raise ValueError(f"{name} contains NaN or inf; clean or impute the data first (galmeta.tasks)")
    if largest > MAX_ABS_VALUE:
        raise ValueError(f"{name} holds a value of {largest:.3g}, beyond ±{MAX_ABS_VALUE:.0e}, the largest galmeta's "
                         "learners accept: standardise the features and centre the targets first "
                         "(galmeta.tasks.FeaturePreprocessor does it for galaxies)")
    return value


def check_inner(inner_lr, inner_steps, min_steps=1):
    """The inner-loop rules shared by both learners: whole ``inner_steps >= min_steps``, finite ``inner_lr >= 0``."""
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, (int, np.integer)) or inner_steps < min_steps:
        raise ValueError(f"inner_steps must be an integer >= {min_steps}, got {inner_steps!r}")
    if isinstance(inner_lr, bool) or not isinstance(inner_lr, (int, float, np.number)) or not np.isfinite(inner_lr) \
            or inner_lr < 0:
        raise ValueError(f"inner_lr must be a finite number >= 0, got {inner_lr!r}")


def check_steps(steps, name="steps") -> int:
    """``steps`` as an int if it is a whole number >= 0 (0: no adaptation), else ValueError naming it."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"{name} must be an integer >= 0 (0: no adaptation), got {steps!r}")
    return int(steps)
