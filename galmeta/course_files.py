"""Where the course's files are: the checkout, the commit its notebooks come from, the figures of a notebook."""
from __future__ import annotations

from pathlib import Path

__all__ = ["repository_root", "source_commit", "figure_count"]


def repository_root() -> Path:
    """The checkout that holds ``notebooks/`` (the package is installed editable)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir():
        return here
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        if (folder / "notebooks").is_dir() and (folder / "galmeta").is_dir():
            return folder
    raise FileNotFoundError(
        "cannot find the course's notebooks/ folder: run this from a clone of the galmeta repository"
    )


def source_commit(folder: Path) -> str | None:
    """The commit of the clone the notebooks come from (None outside a git checkout or with local changes)."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    if head.returncode != 0 or dirty.returncode != 0 or dirty.stdout.strip() or len(commit) != 40:
        return None  # a notebook edited since the last commit is not what that commit installs
    return commit


def figure_count(notebook) -> int:
    """Number of PNG figures in an executed notebook's outputs."""
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
