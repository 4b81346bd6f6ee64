"""Evaluation results on disk as data that cannot run code: one JSON file and one NumPy archive.

``save_results(results, folder)`` writes ``results.json`` (the configuration, learners' names, groups and
the descriptions of their options, slices, choices, meta-validation scores) and ``results.npz``
(predictions, predictive variances, margins, truths, labels and draws, read back with ``allow_pickle=False``).
``load_results(folder)`` checks both completely and says what is wrong with a file that is not
such a result. Result parts travel between machines (``benchmarks/redness_evaluation.py --merge``), so
nothing in them may be able to run code, as a pickle could.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

__all__ = ["ResultsFileError", "LearnerRecord", "save_results", "load_results", "RESULTS_JSON", "RESULTS_ARRAYS"]

RESULTS_JSON = "results.json"
RESULTS_ARRAYS = "results.npz"
FORMAT = "galmeta-evaluation-results"
FORMAT_VERSION = 2  # 2: predictive variances


class ResultsFileError(ValueError):
    """A results folder is missing, damaged, or not a galmeta evaluation result."""


class LearnerRecord:
    """What a saved result keeps of a learner: its name, group, whether it regresses, and its options.

    Options are kept by a text key; :meth:`describe` and :meth:`curve_key` answer from the recorded values,
    so tables and figures drawn from a loaded result equal those drawn from the run.
    """

    def __init__(self, name, group, regression, options):
        self.name, self.group, self.regression = name, group, bool(regression)
        self.options = options  # key -> {"describe": str, "curve_key": [family, steps] or None}

    def describe(self, option):
        return self.options[option]["describe"]

    def curve_key(self, option):
        key = self.options[option]["curve_key"]
        return None if key is None else tuple(key)

    def __repr__(self):
        return f"LearnerRecord({self.name!r}, group={self.group!r})"


def _option_key(option) -> str:
    return json.dumps(option if not isinstance(option, tuple) else list(option))


def _finite_or_text(value):
    value = float(value)
    return value if math.isfinite(value) else repr(value)  # "inf", "nan": strict JSON has none; float() reads them


def save_results(results, folder) -> Path:
    """Write ``results`` (an :class:`galmeta.evaluate.EvaluationResults`) into ``folder``; returns the folder."""
    from galmeta.safe_files import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(results.learners)
    options = {name: {} for name in names}

    def key_of(name, option):
        learner = results.learners[name]
        if isinstance(learner, LearnerRecord):
            return option
        key = _option_key(option)
        curve = learner.curve_key(option)
        options[name][key] = {"describe": learner.describe(option),
                              "curve_key": None if curve is None else [curve[0], curve[1]]}
        return key

    chosen, val_rmse, option_rmse = [], [], []
    for (name, k, fold, seed), option in results.chosen.items():
        chosen.append([name, k, fold, seed, key_of(name, option)])
        val_rmse.append([name, k, fold, seed, _finite_or_text(results.val_rmse[(name, k, fold, seed)])])
        option_rmse.append([name, k, fold, seed, [[key_of(name, o), _finite_or_text(v)]
                                                  for o, v in results.option_rmse[(name, k, fold, seed)].items()]])
    for name, learner in results.learners.items():
        if isinstance(learner, LearnerRecord):
            options[name] = learner.options
    arrays = {}
    for (name, k, fold, seed), values in results.predictions.items():
        index = names.index(name)
        arrays[f"prediction/{index}/{k}/{fold}/{seed}"] = np.asarray(values, float)
        arrays[f"margin/{index}/{k}/{fold}/{seed}"] = np.asarray(results.margins[(name, k, fold, seed)], float)
        arrays[f"variance/{index}/{k}/{fold}/{seed}"] = np.asarray(results.variances[(name, k, fold, seed)], float)
    for (k, fold), draws in results.draws.items():
        arrays[f"labels/{k}/{fold}"] = np.asarray(results.labels[(k, fold)], bool)
        arrays[f"truth/{k}/{fold}"] = np.asarray(results.truth[(k, fold)], float)
        arrays[f"support/{k}/{fold}"] = np.asarray(draws.support, np.int64)
        arrays[f"query/{k}/{fold}"] = np.asarray(draws.query, np.int64)
        arrays[f"slice_ids/{k}/{fold}"] = np.asarray(draws.slice_ids, np.int64)
    document = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "config": asdict(results.config),
        "target_name": results.target_name,
        "sample": results.sample,
        "label_thresholds": [[fold, float(value)] for fold, value in results.label_thresholds.items()],
        "learners": [{"name": name, "group": results.learners[name].group,
                      "regression": bool(results.learners[name].regression), "options": options[name]}
                     for name in names],
        "slices": results.slices,
        "chosen": chosen, "val_rmse": val_rmse, "option_rmse": option_rmse,
        "draws": [[k, fold, draws.split] for (k, fold), draws in results.draws.items()],
        "diverged": [[name, fold, seed, int(it)] for (name, fold, seed), it in results.diverged.items()],
        "seconds": float(results.seconds),
    }
    with atomic_write(folder / RESULTS_ARRAYS) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    with atomic_write(folder / RESULTS_JSON) as tmp:
        tmp.write_text(json.dumps(document, indent=1, default=_plain))
    return folder


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not plain data")


def load_results(folder):
    """Read a result written by :func:`save_results`, checking it completely.

    Raises
    ------
    ResultsFileError
        Naming the file and what is wrong (missing, not JSON, not a galmeta result, an array that would
        need code to load, a missing or inconsistent entry).
    """
    from galmeta.evaluation_config import EvaluationConfig
    from galmeta.learners import Draws
    from galmeta.results import EvaluationResults

    folder = Path(folder)
    json_path, arrays_path = folder / RESULTS_JSON, folder / RESULTS_ARRAYS
    for path in (json_path, arrays_path):
        if not path.is_file():
            old = " (results.pickle files of older versions are no longer read: they could run code; re-run " \
                  "the evaluation)" if (folder / "results.pickle").exists() else ""
            raise ResultsFileError(f"{path} is missing: {folder} does not hold a saved evaluation{old}.")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{json_path} is not readable JSON ({exc}); copy the results folder again.") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ResultsFileError(f"{json_path} is not a galmeta evaluation result (no 'format: {FORMAT}').")
    if document.get("format_version") != FORMAT_VERSION:
        raise ResultsFileError(f"{json_path} has format version {document.get('format_version')!r}; this galmeta "
                               f"reads version {FORMAT_VERSION}. Re-run the evaluation with this version.")
    try:
        with np.load(arrays_path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        raise ResultsFileError(f"{arrays_path} holds Python objects, which galmeta refuses to load because they "
                               f"could run code ({exc}).") from exc
    except Exception as exc:
        raise ResultsFileError(f"{arrays_path} is not a readable NumPy archive ({type(exc).__name__}: {exc}); "
                               "copy the results folder again.") from exc
    try:
        return _rebuild(document, arrays, EvaluationConfig, EvaluationResults, Draws)
    except ResultsFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ResultsFileError(f"{folder}: the saved evaluation is incomplete or inconsistent "
                               f"({type(exc).__name__}: {exc}); re-run or copy it again.") from exc


def _rebuild(document, arrays, EvaluationConfig, EvaluationResults, Draws):
    def as_tuple(value):
        return tuple(as_tuple(v) for v in value) if isinstance(value, list) else value

    config = EvaluationConfig(**{key: as_tuple(value) for key, value in document["config"].items()})
    learners = {entry["name"]: LearnerRecord(str(entry["name"]), str(entry["group"]), entry["regression"],
                                             dict(entry["options"]))
                for entry in document["learners"]}
    names = list(learners)
    results = EvaluationResults(config=config, learners=learners, target_name=str(document["target_name"]),
                                sample=str(document["sample"]))
    results.label_thresholds = {int(fold): float(value) for fold, value in document["label_thresholds"]}
    results.slices = [dict(s) for s in document["slices"]]
    results.seconds = float(document["seconds"])
    results.diverged = {(name, int(fold), int(seed)): int(it) for name, fold, seed, it in document["diverged"]}
    for name, k, fold, seed, option in document["chosen"]:
        if option not in learners[name].options:
            raise ResultsFileError(f"the chosen option {option!r} of {name!r} is not among its recorded options")
        results.chosen[(name, int(k), int(fold), int(seed))] = option
    for name, k, fold, seed, value in document["val_rmse"]:
        results.val_rmse[(name, int(k), int(fold), int(seed))] = float(value)
    for name, k, fold, seed, pairs in document["option_rmse"]:
        results.option_rmse[(name, int(k), int(fold), int(seed))] = {option: float(v) for option, v in pairs}
    for key, values in arrays.items():
        kind, *parts = key.split("/")
        if kind in ("prediction", "margin", "variance"):
            index, k, fold, seed = (int(p) for p in parts)
            store = {"prediction": results.predictions, "margin": results.margins, "variance": results.variances}[kind]
            store[(names[index], k, fold, seed)] = values
    for k, fold, split in document["draws"]:
        k, fold = int(k), int(fold)
        results.labels[(k, fold)] = arrays[f"labels/{k}/{fold}"]
        results.truth[(k, fold)] = arrays[f"truth/{k}/{fold}"]
        results.draws[(k, fold)] = Draws(str(split), k, arrays[f"slice_ids/{k}/{fold}"], arrays[f"support/{k}/{fold}"],
                                         arrays[f"query/{k}/{fold}"])
    for key, values in results.predictions.items():
        for store in (results.margins, results.variances):
            if key not in store or values.shape != store[key].shape:
                raise ResultsFileError(f"predictions, margins and variances of {key[0]!r} at K={key[1]} do not match")
        if values.shape != results.truth[(key[1], key[2])].shape:
            raise ResultsFileError(f"predictions of {key[0]!r} at K={key[1]}, fold {key[2]} do not match the draws")
    return results
