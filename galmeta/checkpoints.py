"""Checkpoints of a :class:`galmeta.maml_torch.MetaLearner`: tensors and plain data only, checked before use.

A checkpoint holds the model, the learned inner rates, the optimiser, the configuration, the iteration,
the history and the random state. It is written under a unique temporary name and renamed into place
(two writers never share a file), read with ``torch.load(weights_only=True)`` (a crafted file cannot run
code), and checked completely before anything of the learner changes. It resumes only into a learner
with the same training settings (:data:`TRAINING_SETTINGS`).
"""
from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import torch

from galmeta.safe_files import atomic_write

__all__ = ["CheckpointError", "TRAINING_SETTINGS", "save_checkpoint", "load_checkpoint"]

#: What a checkpoint holds.
CHECKPOINT_KEYS = {"model", "inner_lrs", "optimiser", "config", "iteration", "history", "torch_rng"}

#: Settings that change what meta-training does: a checkpoint resumes only into a learner with the same ones.
TRAINING_SETTINGS = ("inner_lr", "inner_steps", "meta_lr", "meta_batch", "reptile_steps", "step_lrs",
                     "multi_step_iterations", "inner_grad_clip", "head_names")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit this learner; the learner was left unchanged."""


def save_checkpoint(learner, path):
    """Save model, learned rates, optimiser, config, iteration, history and RNG state."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**learner._state(), "optimiser": learner.optimiser.state_dict(), "config": asdict(learner.config),
               "iteration": learner.iteration, "history": learner.history, "torch_rng": torch.get_rng_state()}
    with atomic_write(path) as tmp:  # a unique temporary name: two writers never share one
        torch.save(payload, tmp)


def load_checkpoint(learner, path):
    """Restore ``learner`` from ``path``; raises :class:`CheckpointError` (learner unchanged) when it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        payload = torch.load(path, map_location=learner.device, weights_only=True)
    except Exception as exc:  # truncated zip, not a checkpoint, or objects weights_only refuses
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable galmeta checkpoint ({type(exc).__name__}: {reason}). It may be truncated "
            "(an interrupted copy), or hold Python objects other than tensors and plain data, which galmeta "
            "refuses to load because they could run code. Nothing was changed."
        ) from exc
    _check_payload(learner, payload, path)
    _check_same_training(learner, payload["config"], path)
    trial = copy.deepcopy(learner.optimiser)
    try:
        trial.load_state_dict(payload["optimiser"])
    except Exception as exc:
        raise CheckpointError(f"{path}: the optimiser state does not fit this learner ({exc}). Nothing was changed.") from exc
    learner._load_state(payload)
    learner.optimiser.load_state_dict(payload["optimiser"])
    learner.iteration, learner.history = int(payload["iteration"]), payload["history"]
    torch.set_rng_state(payload["torch_rng"].cpu())
    learner.is_fitted_ = True
    return learner


def _comparable(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _check_same_training(learner, saved: dict, path):
    """Refuse a checkpoint trained with other settings: resuming would silently mix two configurations
    (Adam's saved state carries the checkpoint's meta_lr, while this learner's config says another)."""
    differ = [f"{name}={saved.get(name)!r} in the checkpoint, {getattr(learner.config, name)!r} here"
              for name in TRAINING_SETTINGS
              if _comparable(saved.get(name)) != _comparable(getattr(learner.config, name))]
    if differ:
        raise CheckpointError(
            f"{path} was trained with other settings: {'; '.join(differ)}. Create the learner with the "
            "checkpoint's settings to resume it (for galmeta train: the same --inner-lr, --inner-steps, "
            "--meta-lr and --meta-batch), or write a new checkpoint. Nothing was changed."
        )


def _check_payload(learner, payload, path):
    def fail(what):
        raise CheckpointError(f"{path}: {what}. Nothing was changed.")

    if not isinstance(payload, dict) or not CHECKPOINT_KEYS <= set(payload):
        fail(f"not a galmeta checkpoint (expected the entries {sorted(CHECKPOINT_KEYS)})")
    config = payload["config"]
    if not isinstance(config, dict) or config.get("algorithm") != learner.config.algorithm:
        fail(f"checkpoint is for {config.get('algorithm') if isinstance(config, dict) else config!r}, "
             f"learner is {learner.config.algorithm!r}")
    own = learner.model.state_dict()
    model = payload["model"]
    if not isinstance(model, dict) or set(model) != set(own):
        fail(f"the model's parameters are {sorted(model) if isinstance(model, dict) else model!r}, "
             f"this learner's are {sorted(own)}")
    for name, tensor in model.items():
        if not torch.is_tensor(tensor) or tensor.shape != own[name].shape:
            fail(f"parameter {name!r} has shape {getattr(tensor, 'shape', None)}, this model's is {tuple(own[name].shape)}")
        if not torch.isfinite(tensor).all():
            fail(f"parameter {name!r} holds NaN or inf")
    rates = payload["inner_lrs"]
    if (rates is None) != (learner.inner_lrs is None):
        fail("learned inner rates are missing or unexpected for this algorithm")
    if rates is not None:
        if not isinstance(rates, dict) or set(rates) != set(learner.inner_lrs):
            fail("the learned inner rates do not match the model's parameters")
        for name, tensor in rates.items():
            if not torch.is_tensor(tensor) or tensor.shape != learner.inner_lrs[name].shape:
                fail(f"learned rate {name!r} has the wrong shape")
    iteration = payload["iteration"]
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        fail(f"iteration is {iteration!r}, not a whole number >= 0")
    history = payload["history"]
    if not isinstance(history, dict) or set(history) != set(learner.history):
        fail("the training history is malformed")
    rng = payload["torch_rng"]
    if not torch.is_tensor(rng) or rng.dtype != torch.uint8:
        fail("the random-number state is malformed")
