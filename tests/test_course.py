"""The course as a product: notebook frame, student copies, Colab cell, HTML rendering, CLI, environments."""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from packaging.requirements import Requirement

from galmeta import course

ROOT = Path(__file__).resolve().parent.parent
SOURCES = course.notebook_sources()


def test_notebooks_are_numbered_in_reading_order():
    numbers = [p.name[:2] for p in SOURCES]
    assert numbers == [f"{i:02d}" for i in range(1, len(SOURCES) + 1)]
    assert len(SOURCES) >= 5


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_frame(source):
    notebook = jupytext.read(source)
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    for heading in ("**Learning goals**", "**Prerequisites:**", "**Runtime:**", "## Summary", "## Exercises"):
        assert heading in text, f"{source.name} lacks {heading}"
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "describe_mode()" in code, "every notebook prints the mode it runs in"
    assert "assert" in code, "notebooks check their claims with assertions"
    assert any("solution" in c.metadata.get("tags", []) for c in notebook.cells)
    assert "NBVAL_SKIP" not in source.read_text()


def test_student_copies_are_clean(tmp_path):
    written = course.make_student_copies(tmp_path)
    assert len(written) == len(SOURCES)
    for path in written:
        notebook = nbformat.read(path, as_version=4)
        assert not [c for c in notebook.cells if "solution" in c.metadata.get("tags", [])]


def test_a_leaking_student_copy_is_caught(tmp_path):
    course.generate_notebooks(tmp_path, strip_solutions=True)
    teacher = course.generate_notebooks(tmp_path / "teacher")[0]
    shutil.copy(teacher, tmp_path / teacher.name)  # the solution is back in
    with pytest.raises(ValueError, match="solution"):
        course.check_student_copies(tmp_path)
    (tmp_path / teacher.name).write_text("{ not json")
    with pytest.raises(ValueError, match="cannot be parsed"):
        course.check_student_copies(tmp_path)


def test_colab_install_cell_is_a_no_op_when_installed(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("must not ask for anything"))
    for source in SOURCES:
        first_code = next(c for c in jupytext.read(source).cells if c.cell_type == "code")
        assert 'find_spec("galmeta") is None' in first_code.source
        exec(compile(first_code.source, str(source), "exec"), {})
    assert calls == []


def test_render_html_writes_an_index(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · A title"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, executed / "01_demo.ipynb")
    index = course.render_html(executed, tmp_path / "site")
    assert 'href="01_demo.html"' in index.read_text() and "A title" in index.read_text()
    assert (tmp_path / "site" / "01_demo.html").exists()
    with pytest.raises(FileNotFoundError, match="make course"):
        course.render_html(tmp_path / "empty", tmp_path / "site2")


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no headless browser")
def test_rendered_page_in_a_headless_browser(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · Browser check")]),
                   executed / "01_demo.ipynb")
    index = course.render_html(executed, tmp_path / "site")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    for page in (index, tmp_path / "site" / "01_demo.html"):
        shot = tmp_path / (page.stem + ".png")
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                        "--window-size=1000,700", page.as_uri()], check=True, capture_output=True, timeout=120)
        assert shot.stat().st_size > 5000


@pytest.mark.parametrize("args", [[], ["data"], ["data", "import"], ["data", "fetch"], ["data", "info"], ["data", "use"],
                                  ["course"], ["course", "generate"], ["course", "run"], ["course", "render"],
                                  ["student"], ["train"]])
def test_cli_help(args):
    done = subprocess.run([sys.executable, "-m", "galmeta.cli", *args, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: galmeta" in done.stdout


def test_cli_errors_have_exit_codes():
    done = subprocess.run([sys.executable, "-m", "galmeta.cli", "course", "run", "99"], capture_output=True, text=True)
    assert done.returncode == 2 and "no notebook numbered" in done.stderr
    done = subprocess.run([sys.executable, "-m", "galmeta.cli", "bogus"], capture_output=True, text=True)
    assert done.returncode == 2


def test_binder_environment_is_satisfied_by_the_pip_install():
    """Every package environment.yml asks for is installed here in a version it accepts."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_to_pip = {"pytorch": "torch"}
    for dep in env["dependencies"]:
        if not isinstance(dep, str) or dep.split("=")[0] in ("python", "pip"):
            continue
        name = re.split(r"[<>=!~ ]", dep, maxsplit=1)[0]
        spec = dep[len(name):]
        if spec.startswith("=") and not spec.startswith("=="):  # conda's "=2.13.*" is pip's "==2.13.*"
            spec = "=" + spec
        requirement = Requirement(conda_to_pip.get(name, name) + spec)
        version = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement} but {version} is installed"
    assert (ROOT / "postBuild").exists() and not (ROOT / ".binder").exists(), "a .binder/ folder would hide environment.yml from Binder"


def test_summary_keeps_notebooks_not_rerun(tmp_path):
    import json

    path = tmp_path / "summary.json"
    course._write_summary(path, [{"notebook": "01_a", "seconds": 1.0, "status": "ok", "results": []},
                                 {"notebook": "02_b", "seconds": 2.0, "status": "ok", "results": []}])
    course._write_summary(path, [{"notebook": "02_b", "seconds": 3.0, "status": "ok", "results": ["x"]}])
    entries = json.loads(path.read_text())["notebooks"]
    assert [(e["notebook"], e["seconds"]) for e in entries] == [("01_a", 1.0), ("02_b", 3.0)]


def test_an_executed_notebook_shows_its_figures_and_so_does_its_page(tmp_path, monkeypatch):
    """Batch execution must capture figures whatever MPLBACKEND the shell exports (it once exported Agg)."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("GALMETA_MODE", "ci")
    executed = tmp_path / "executed"
    path = course.generate_notebooks(executed, ["01"])[0]
    status, _ = course.execute_notebook(path, timeout=600)
    assert status == "ok", status
    notebook = nbformat.read(path, as_version=4)
    assert course.figure_count(notebook) >= 3, "notebook 01 draws at least three figures"
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "IProgress" not in text and "it/s]" not in text, "no progress-bar output in batch execution"
    course.render_html(executed, tmp_path / "site")
    page = (tmp_path / "site" / "01_fetch_sdss.html").read_text()
    assert page.count("<img") >= 3


def test_a_failing_cell_is_reported_in_one_line(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('GALMETA_DATA is wrong: set it')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "01_bad.ipynb"
    nbformat.write(nb, path)
    status, _ = course.execute_notebook(path, timeout=120, cwd=tmp_path)
    assert status == "ValueError: GALMETA_DATA is wrong: set it"


def test_regenerating_student_copies_keeps_a_students_edits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = course.make_student_copies(select=["01"])
    assert first[0].parent == tmp_path / "build" / "student", "written relative to the current folder"
    edited = nbformat.read(first[0], as_version=4)
    edited.cells.append(nbformat.v4.new_code_cell("my_answer = 42"))
    nbformat.write(edited, first[0])
    course.make_student_copies(select=["01"])
    kept = list((tmp_path / "build" / "student").glob("01_fetch_sdss.kept-*.ipynb"))
    assert len(kept) == 1 and "my_answer = 42" in kept[0].read_text()
    assert "my_answer" not in first[0].read_text(), "the fresh copy is clean"
    course.make_student_copies(select=["01"])  # unchanged copies are simply refreshed, nothing more kept
    assert len(list((tmp_path / "build" / "student").glob("*.kept-*.ipynb"))) == 1


def test_running_the_course_prints_only_the_courses_own_lines(tmp_path):
    """No kernel warning about its transport (IPC sockets where the system has them); the book is built."""
    script = ("from pathlib import Path\nfrom galmeta.course import run_course\n"
              f"run_course(['01'], out=Path({str(tmp_path / 'course')!r}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "GALMETA_MODE": "ci"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Kernel is running over TCP" not in done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr[-2000:]
    assert (tmp_path / "site" / "01_fetch_sdss.html").is_file() and "course book:" in done.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("kernel")], "IPC socket files left behind"
