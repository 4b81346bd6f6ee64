"""Memory and time of `galmeta data import` on oversized tables: refused on a stream, before parsing.

Builds, in a temporary folder, the hostile files of the reliability review (a 0.4 GB and a 2 GB table
compressed into a few MB, a table with 10^6 columns) and the course's own table, imports each in a fresh
process and prints its exit code, peak memory (max RSS) and wall time, side by side.

    python benchmarks/oversized_imports.py
"""
from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path


def gzip_of_rows(path: Path, megabytes: int, header: str, row: str) -> Path:
    """A .csv.gz expanding to about ``megabytes`` MB, written in pieces."""
    block = (row * (1_000_000 // len(row))).encode()
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    with open(path, "wb") as handle:
        handle.write(compressor.compress(header.encode()))
        for _ in range(megabytes):
            handle.write(compressor.compress(block))
        handle.write(compressor.flush())
    return path


def import_in_fresh_process(path: Path, home: Path) -> tuple[int, float, float, str]:
    """(exit code, peak MB, seconds, last line of stderr) of one `galmeta data import` in a child process."""
    script = ("import atexit, resource, sys\n"
              "atexit.register(lambda: print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
              "from galmeta.cli import main\n"
              f"sys.exit(main(['data', 'import', {str(path)!r}, '--name', 'probe']))")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={"GALMETA_DATA": str(home), "PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    peak_mb = int(lines.pop().split()[1]) / 1024  # this child's own peak (Linux: kB)
    message = (lines or done.stdout.strip().splitlines() or [""])[-1]
    return done.returncode, peak_mb, seconds, message


def main():
    from galmeta.data import embedded_table_path

    folder = Path(tempfile.mkdtemp(prefix="galmeta-oversized-"))
    try:
        row = "1,3," + "x" * 190 + "\n"
        wide = folder / "wide.csv.gz"
        wide.write_bytes(gzip.compress((",".join(f"c{i}" for i in range(1_000_000)) + "\n").encode()))
        cases = [
            ("the course's table (25,000 rows)", embedded_table_path()),
            ("0.4 GB in a .csv.gz", gzip_of_rows(folder / "big.csv.gz", 400, "objID,type,notes\n", row)),
            ("2 GB in a .csv.gz", gzip_of_rows(folder / "huge.csv.gz", 2000, "objID,type,notes\n", row)),
            ("10^6 columns", wide),
        ]
        print(f"{'file':<34s} {'on disk':>9s} {'exit':>5s} {'peak MB':>8s} {'seconds':>8s}  message")
        for label, path in cases:
            home = folder / f"home-{label[:4].strip()}"
            code, peak, seconds, message = import_in_fresh_process(path, home)
            print(f"{label:<34s} {path.stat().st_size / 1e6:7.1f}MB {code:5d} {peak:8.0f} {seconds:8.1f}  {message[:110]}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
