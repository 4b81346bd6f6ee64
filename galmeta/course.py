"""Build and run the course's notebooks.

The notebooks are jupytext ``py:percent`` files in ``notebooks/``; ``.ipynb``
files are build products. This module generates them (``generate``), executes
them in order into ``build/course/`` and prints a summary (``run``); :mod:`galmeta.book` renders them as a
book (``render``).

Command line: ``galmeta course generate --out DIR``, ``galmeta course run [01 02 ...]`` and
``galmeta course render``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from galmeta.course_files import figure_count, repository_root, source_commit

__all__ = ["repository_root", "notebook_sources", "generate_notebooks", "run_course", "make_student_copies",
           "check_student_copies", "render_html"]


def notebook_sources(select: list[str] | None = None, root: Path | None = None) -> list[Path]:
    """The notebook sources in reading order, optionally only those whose number is in ``select``."""
    root = root or repository_root()
    sources = sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*.py"))
    if select:
        wanted = {s.zfill(2) for s in select}
        unknown = wanted - {p.name[:2] for p in sources}
        if unknown:
            raise ValueError(f"no notebook numbered {sorted(unknown)}; have {[p.name for p in sources]}")
        sources = [p for p in sources if p.name[:2] in wanted]
    return sources


def generate_notebooks(out: Path, select: list[str] | None = None, strip_solutions: bool = False) -> list[Path]:
    """Write ``.ipynb`` versions of the notebook sources into ``out``.

    Parameters
    ----------
    out : path
        Target folder (created).
    select : list of str, optional
        Notebook numbers, e.g. ``["01", "03"]``.
    strip_solutions : bool, default False
        Remove cells tagged ``solution`` (student copies).
    """
    import jupytext

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in notebook_sources(select):
        notebook = jupytext.read(source)
        if strip_solutions:
            notebook.cells = [c for c in notebook.cells if "solution" not in c.metadata.get("tags", [])]
        notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
        commit = source_commit(source.parent)
        for index, cell in enumerate(notebook.cells):
            cell.id = f"cell-{index}"  # deterministic: the same source gives the same bytes (and clean diffs)
            if commit and cell.cell_type == "code" and COMMIT_PLACEHOLDER in cell.source:
                # pins the Colab install to the course this notebook was made from
                cell.source = cell.source.replace(COMMIT_PLACEHOLDER, f'COURSE_COMMIT = "{commit}"')
        target = out / (source.stem + ".ipynb")
        jupytext.write(notebook, target, fmt="ipynb")
        written.append(target)
    return written


#: The line of every notebook's install cell that names the commit to install (see :func:`generate_notebooks`).
COMMIT_PLACEHOLDER = 'COURSE_COMMIT = "main"'


def _solution_cells(notebook):
    return [c for c in notebook.cells if "solution" in c.metadata.get("tags", [])]


def make_student_copies(out: Path | None = None, select: list[str] | None = None,
                        lock_timeout: float = 60.0) -> list[Path]:
    """Student notebooks: solution cells removed, no outputs, into ``out`` (default ``./build/student``).

    A student's work is never destroyed: where a copy already exists and differs from a fresh one (the
    student edited or ran it), it is kept beside the new one as ``NAME.kept-YYYYmmdd-HHMMSS.ipynb``
    (created exclusively, never over another file). A copy that already equals the fresh one is left
    alone (even when it is read-only). Two runs into one folder take turns (a lock file,
    ``.galmeta-student.lock``), so neither can replace a copy the other just judged.

    Returns
    -------
    list of Path
        The fresh copies.
    """
    import tempfile

    from galmeta.safe_files import atomic_write, create_exclusive, exclusive_lock

    out = Path(out or Path.cwd() / "build" / "student")
    with tempfile.TemporaryDirectory() as staging:
        fresh = generate_notebooks(Path(staging), select, strip_solutions=True)
        check_student_copies(Path(staging), select)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with exclusive_lock(out / ".galmeta-student.lock", f"student copies in {out}", timeout=lock_timeout):
            for path in fresh:
                target, new = out / path.name, path.read_bytes()
                if target.exists():
                    old = target.read_bytes()
                    if old == new:
                        written.append(target)
                        continue
                    kept = _keep_exclusively(target, old, stamp, create_exclusive)
                    print(f"kept your edited {target.name} as {kept.name}")
                with atomic_write(target) as tmp:
                    tmp.write_bytes(new)
                written.append(target)
    return written


def _keep_exclusively(target: Path, content: bytes, stamp: str, create_exclusive) -> Path:
    """Write ``content`` to the first free ``NAME.kept-STAMP[-n].ipynb``, never over an existing file."""
    n = 0
    while True:
        suffix = f"-{n}" if n else ""
        kept = target.with_name(f"{target.stem}.kept-{stamp}{suffix}.ipynb")
        if create_exclusive(kept, content):
            return kept
        n += 1


def check_student_copies(folder: Path, select: list[str] | None = None):
    """Fail if a student copy is missing, unparsable, holds outputs, or leaks a solution.

    Every source notebook must end with exercises and at least one cell tagged ``solution``.
    """
    import jupytext
    import nbformat

    problems = []
    for source in notebook_sources(select):
        teacher = jupytext.read(source)
        solutions = _solution_cells(teacher)
        if not solutions:
            problems.append(f"{source.name}: no cell tagged 'solution'")
        if not any(c.cell_type == "markdown" and "## Exercises" in c.source for c in teacher.cells):
            problems.append(f"{source.name}: no '## Exercises' section")
        copy = Path(folder) / (source.stem + ".ipynb")
        if not copy.exists():
            problems.append(f"{copy}: missing")
            continue
        try:
            student = nbformat.read(copy, as_version=4)
            nbformat.validate(student)
        except Exception as exc:  # report every kind of parse failure
            problems.append(f"{copy.name}: cannot be parsed ({exc})")
            continue
        if _solution_cells(student):
            problems.append(f"{copy.name}: a cell tagged 'solution' is still there")
        student_code = "\n".join(c.source for c in student.cells)
        for cell in solutions:
            body = [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            if body and all(line in student_code for line in body):
                problems.append(f"{copy.name}: the solution starting {body[0][:40]!r} leaks into the student copy")
        if any(c.get("outputs") for c in student.cells if c.cell_type == "code"):
            problems.append(f"{copy.name}: has outputs")
    if problems:
        raise ValueError("student copies are not clean:\n  " + "\n  ".join(problems))


def render_html(executed: Path | None = None, out: Path | None = None, quiet: bool = True) -> Path:
    """The course book (:func:`galmeta.book.build_book`) from the executed notebooks; returns its index page."""
    from galmeta.book import build_book

    return build_book(executed, out, quiet=quiet)


#: Environment of batch execution: the inline backend (figures are captured as PNG outputs, whatever
#: MPLBACKEND the shell has) and no progress bars (they would flood the executed notebook and the site).
BATCH_ENVIRONMENT = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "GALMETA_PROGRESS": "0"}


def execute_notebook(path: Path, timeout: int = 3600, cwd: Path | None = None):
    """Execute one ``.ipynb`` in place the way ``galmeta course run`` does.

    Returns
    -------
    status : str
        ``"ok"`` or the error's last lines.
    seconds : float
    """
    import os
    import shutil
    import tempfile

    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    ipc_folder = tempfile.mkdtemp(prefix="galmeta-kernel-") if os.name == "posix" else None
    options = {}
    if ipc_folder:  # IPC sockets where the system has them: a kernel over TCP warns in the console about it

        class IPCKernelManager(KernelManager):
            def __init__(self, **kwargs):
                super().__init__(transport="ipc", ip=os.path.join(ipc_folder, "kernel"), **kwargs)

        options["kernel_manager_class"] = IPCKernelManager
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", **options,
                            resources={"metadata": {"path": str(cwd or repository_root() / "notebooks")}})
    saved = {key: os.environ.get(key) for key in BATCH_ENVIRONMENT}
    os.environ.update(BATCH_ENVIRONMENT)  # the kernel inherits this process's environment
    start = time.perf_counter()
    status = "ok"
    try:
        client.execute()
    except CellExecutionError as exc:
        status = _short_error(str(exc))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if ipc_folder:
            shutil.rmtree(ipc_folder, ignore_errors=True)
    seconds = time.perf_counter() - start
    nbformat.write(notebook, path)
    return status, seconds


def _short_error(text: str) -> str:
    """The part of a cell error a student can act on: the exception line, not 3,000 characters of traceback."""
    import re

    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # no terminal colours
    lines = [line for line in plain.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception|Warning)\b", line)]
    return errors[-1] if errors else (lines[-1] if lines else "the notebook failed")


def run_course(select: list[str] | None = None, out: Path | None = None, timeout: int = 3600) -> list[dict]:
    """Execute the notebooks in order into ``build/course`` and print a summary.

    Returns
    -------
    list of dict
        One entry per notebook: name, seconds, status, figures, headline results.
    """
    import nbformat

    from galmeta.config import MODE, describe_mode
    from galmeta.data import which_source

    root = repository_root()
    out = Path(out or root / "build" / "course")
    print(describe_mode())
    print(f"galaxy table: {which_source()} (see `galmeta data info`)")
    summary = []
    for path in generate_notebooks(out, select):
        status, seconds = execute_notebook(path, timeout, cwd=root / "notebooks")
        notebook = nbformat.read(path, as_version=4)
        if status != "ok":
            print(f"\n{path.name} stopped: {status}\n  open {path} to see the cell and its full traceback.",
                  file=sys.stderr)
            status = "FAILED"
        summary.append({"notebook": path.stem, "seconds": round(seconds, 1), "status": status,
                        "figures": figure_count(notebook), "results": _results_of(notebook)})
        print(f"  {path.stem:<28s} {seconds:7.1f} s  {status:<6s} {figure_count(notebook):3d} figures", flush=True)
        if status != "ok":
            break
    _write_summary(out / "summary.json", summary)
    print(f"\nExecuted notebooks are in {out} (mode: {MODE}).")
    for entry in summary:
        for line in entry["results"]:
            print(f"  [{entry['notebook'][:2]}] {line}")
    if any(entry["status"] != "ok" for entry in summary):
        raise SystemExit(1)
    index = render_html(out, out.parent / "site", quiet=False)  # build/course -> build/site
    print(f"Browse the executed course as a book, without running anything: {index}")
    return summary


def _write_summary(path: Path, summary: list[dict]):
    """Record this run's notebooks, keeping earlier entries of the same mode for notebooks not re-run."""
    from galmeta.config import MODE

    entries = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
        if previous.get("mode") == MODE:
            entries = {e["notebook"]: e for e in previous.get("notebooks", [])}
    entries.update({e["notebook"]: e for e in summary})
    path.write_text(json.dumps({"mode": MODE, "notebooks": [entries[k] for k in sorted(entries)]}, indent=2))


def _results_of(notebook) -> list[str]:
    """Lines a notebook printed that start with 'RESULT:' (its headline numbers)."""
    lines = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                lines += [line[len("RESULT:"):].strip() for line in output.get("text", "").splitlines()
                          if line.startswith("RESULT:")]
    return lines
