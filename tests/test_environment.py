"""environment.yml and pyproject.toml list the same packages; config behaves."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> pip name


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_side = {_name(r) for r in project["dependencies"]}
    for extra in ("course", "test"):
        pip_side |= {_name(r) for r in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_side = set()
    for dep in env["dependencies"]:
        if isinstance(dep, str) and _name(dep) not in ("python", "pip"):
            conda_side.add(CONDA_NAMES.get(_name(dep), _name(dep)))
        elif isinstance(dep, dict):  # packages conda-forge lacks, installed by pip
            conda_side |= {_name(p) for p in dep.get("pip", []) if not p.startswith("-")}
    assert pip_side == conda_side, f"only in pyproject: {pip_side - conda_side}; only in environment.yml: {conda_side - pip_side}"
    assert "conda-forge" in env["channels"] and "nodefaults" in env["channels"]
    assert any(isinstance(d, dict) and "-e ." in d.get("pip", []) for d in env["dependencies"])
    assert "python=3.11" in env["dependencies"]


def test_torch_is_pinned_to_the_cpu_wheel_series():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = [r for r in project["dependencies"] if _name(r) == "torch"]
    assert torch_req == ["torch==2.13.*"]


def test_mode_is_read_once_and_validated(monkeypatch):
    import importlib
    import galmeta.config as config

    monkeypatch.setenv("GALMETA_MODE", "bogus")
    with pytest.raises(ValueError, match="GALMETA_MODE"):
        importlib.reload(config)
    monkeypatch.setenv("GALMETA_MODE", "ci")
    importlib.reload(config)
    assert config.MODE == "ci" and config.by_mode(1, 2, 3) == 1


def test_device_choice_falls_back_to_cpu(monkeypatch):
    import torch
    from galmeta.config import try_device

    monkeypatch.delenv("GALMETA_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert try_device().type == expected
    assert try_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            try_device("cuda")


def test_seed_everything_gives_reproducible_generators():
    import torch
    from galmeta.config import seed_everything

    a = seed_everything(5).normal(size=3)
    ta = torch.rand(2)
    b = seed_everything(5).normal(size=3)
    tb = torch.rand(2)
    assert (a == b).all() and torch.equal(ta, tb)
