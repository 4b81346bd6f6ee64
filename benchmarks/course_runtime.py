"""Every notebook's runtime at two commits, measured side by side in one run, into a committed result file.

Each commit is checked out into its own git worktree under ``build/runtime/`` and run from there with this
environment's packages (the worktree's ``galmeta`` comes first on ``PYTHONPATH``). For every notebook, the
two commits execute it at the same time (one process each, so both see the same machine and the same
load; galmeta's PyTorch runs on one thread by default), in the chosen modes. The seconds are those
``galmeta course run`` measures per notebook. The result goes to ``results/notebook_runtimes.json``, from
which ``python -m galmeta.result_tables`` writes the README's runtime columns.

    python benchmarks/course_runtime.py --before 78a1179 [--after HEAD] [--modes laptop ci] [--notebooks 04 06]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("01", "02", "03", "04", "05", "06", "07")


def git(*args, cwd=ROOT):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def worktree(revision: str, name: str) -> tuple[Path, str]:
    """A clean checkout of ``revision`` under build/runtime/NAME (re-created), and its full commit hash."""
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    path = ROOT / "build" / "runtime" / name
    if path.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
    subprocess.run(["rm", "-rf", str(path)], check=True)
    git("worktree", "add", "--detach", str(path), commit)
    return path, commit


def run_notebook(tree: Path, notebook: str, mode: str, timeout: int) -> dict:
    """``galmeta course run NOTEBOOK`` in ``tree``; returns its summary entry (seconds, status)."""
    # one OpenMP / BLAS thread per process (scikit-learn's gradient boosting, NumPy): two processes of two
    # spinning threads each on two cores slowed notebook 02 tenfold, for both commits alike
    env = {**os.environ, "PYTHONPATH": str(tree), "GALMETA_MODE": mode, "GALMETA_PROGRESS": "0",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("GALMETA_THREADS", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "galmeta", "course", "run", notebook], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    out = tree / "build" / "course"  # where the worktree's `galmeta course run` writes
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {"notebooks": []}
    entry = next((e for e in summary["notebooks"] if e["notebook"].startswith(notebook)), None)
    if done.returncode != 0 or entry is None or entry["status"] != "ok":
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"notebook {notebook} ({mode}) failed in {tree}:\n{tail}")
    return {"notebook": entry["notebook"], "seconds": entry["seconds"], "process_seconds": round(wall, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare with (e.g. the one before a change)")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--modes", nargs="+", default=["laptop", "ci"], choices=("ci", "laptop"))
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS))
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--output", default=str(ROOT / "results" / "notebook_runtimes.json"))
    args = parser.parse_args()

    trees = {"before": worktree(args.before, "before"), "after": worktree(args.after, "after")}
    for name, (tree, commit) in trees.items():
        found = subprocess.run([sys.executable, "-c", "import galmeta; print(galmeta.__file__)"], cwd=tree,
                               env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True).stdout
        if not found.strip().startswith(str(tree)):
            raise SystemExit(f"the {name} worktree's galmeta is not the one imported ({found.strip()}); "
                             "is galmeta installed other than in editable mode?")
    print(f"before: {trees['before'][1][:12]}  after: {trees['after'][1][:12]}", flush=True)
    record = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
              "date": time.strftime("%Y-%m-%d"),
              "before": trees["before"][1], "after": trees["after"][1],
              "how": "each notebook executed by both commits at the same time, one process of one thread each "
                     "(benchmarks/course_runtime.py)",
              "modes": {}}
    output = Path(args.output)
    if output.exists():  # keep what an earlier run measured for other modes or notebooks of the same commits
        previous = json.loads(output.read_text())
        if (previous.get("before"), previous.get("after")) == (record["before"], record["after"]):
            record["modes"] = previous.get("modes", {})
    for mode in args.modes:
        measured = record["modes"].setdefault(mode, {})
        for notebook in args.notebooks:
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = {name: pool.submit(run_notebook, tree, notebook, mode, args.timeout)
                           for name, (tree, _) in trees.items()}
                results = {name: future.result() for name, future in futures.items()}
            stem = results["after"]["notebook"]
            measured[stem] = {"before": results["before"]["seconds"], "after": results["after"]["seconds"]}
            before, after = measured[stem]["before"], measured[stem]["after"]
            print(f"{mode:6s} {stem:<30s} before {before:7.1f} s  after {after:7.1f} s  ({before / after:4.1f}x)",
                  flush=True)
            output.write_text(json.dumps(record, indent=2) + "\n")
        total_before = sum(v["before"] for v in measured.values())
        total_after = sum(v["after"] for v in measured.values())
        print(f"{mode}: all notebooks before {total_before:.0f} s, after {total_after:.0f} s: "
              f"{total_before / total_after:.2f}x faster" + (" (target 3x: " + ("met)" if total_before / total_after >= 3
                                                                                 else "NOT met)") if mode == "laptop" else ""))
    print(f"written: {output}")


if __name__ == "__main__":
    main()
