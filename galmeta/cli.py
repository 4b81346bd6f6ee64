"""The ``galmeta`` command line: data fetch/import/info and running the course.

Exit codes: 0 success, 1 a step failed, 2 bad usage or bad input.
"""
from __future__ import annotations

import argparse
import sys


def _cmd_data_import(args):
    from galmeta.data import ImportLimits, active_snapshot, import_snapshot

    limits = ImportLimits(max_megabytes=args.max_megabytes, max_rows=args.max_rows, max_columns=args.max_columns)
    target = import_snapshot(args.path, name=args.name, force=args.force, activate=True if args.use else None,
                             limits=limits)
    print(f"imported {args.path} -> {target}")
    active = active_snapshot()
    print(f"the course uses: {'snapshot ' + active if active else 'the embedded table'} "
          f"(change with `galmeta data use NAME`)")


def _cmd_data_use(args):
    from galmeta.data import use_snapshot

    name = None if args.name == "embedded" else args.name
    use_snapshot(name)
    print(f"the course now uses: {'snapshot ' + name if name else 'the embedded table'}")


def _cmd_data_fetch(args):
    from galmeta.data import GalaxyQuery, fetch_galaxies

    query = GalaxyQuery(n_rows=args.rows, data_release=args.release, extra=tuple(args.extra), page_size=args.page_size)
    if args.show_sql:
        print(query.sql())
        return
    table = fetch_galaxies(query, refresh=args.refresh, timeout=args.timeout)
    print(f"{len(table)} galaxies cached (query {query.cache_key()})")


def _cmd_data_info(args):
    from galmeta.config import data_home
    from galmeta.data import cache_info, embedded_table_path, which_source

    home = data_home(create=False)
    entries = cache_info()
    print(f"data home: {home}")
    if not entries:
        print("  (no fetched or imported table: fetch with `galmeta data fetch`, import with `galmeta data import PATH`)")
    for e in entries:
        print(f"  {'*' if e['active'] else ' '} {e['kind']:<8s} {e['name']:<45s} "
              f"{e['rows'] if e['rows'] is not None else '?':>7} rows  {e['bytes'] / 1e6:6.1f} MB  {e['source']}  "
              f"{e['when'] or ''}")
    print(f"  embedded table: {embedded_table_path()}")
    source = which_source()
    print(f"the course uses: {source}   (choose with `galmeta data use NAME|embedded`, or GALMETA_SOURCE)")


def _cmd_course_run(args):
    from galmeta.course import run_course

    run_course(args.numbers or None)


def _cmd_student(args):
    from galmeta.course import make_student_copies

    for path in make_student_copies(args.out, args.numbers or None):
        print(path)
    print("student copies are clean: no solutions, no outputs")


def _cmd_train(args):
    from galmeta.train import run

    run(args)


def _cmd_course_generate(args):
    from pathlib import Path

    from galmeta.course import generate_notebooks

    for path in generate_notebooks(Path(args.out), args.numbers or None, strip_solutions=args.student):
        print(path)


def _cmd_course_render(args):
    from galmeta.course import render_html

    print(render_html())


def build_parser():
    from galmeta.data.tables import ImportLimits

    parser = argparse.ArgumentParser(prog="galmeta", description="Meta-learning on SDSS galaxies: course tools.")
    sub = parser.add_subparsers(dest="group", required=True)

    data = sub.add_parser("data", help="fetch, import and list galaxy tables").add_subparsers(dest="action", required=True)
    p = data.add_parser("import", help="import a snapshot file (.csv, .csv.gz, .ecsv, .fits) into the data home")
    p.add_argument("path")
    p.add_argument("--name", help="name in the data home: 1-64 letters, digits, '_' or '-', not starting with '-' "
                                   "(default: the file name)")
    p.add_argument("--force", action="store_true", help="replace a different snapshot of the same name")
    p.add_argument("--use", action="store_true", help="make it the course's table (default: only if none is chosen)")
    defaults = ImportLimits()
    p.add_argument("--max-megabytes", type=float, default=defaults.max_megabytes,
                   help="refuse a table larger than this uncompressed (default %(default)g MB; parsing needs ~12x)")
    p.add_argument("--max-rows", type=int, default=defaults.max_rows, help="refuse more rows (default %(default)s)")
    p.add_argument("--max-columns", type=int, default=defaults.max_columns,
                   help="refuse more columns (default %(default)s)")
    p.set_defaults(func=_cmd_data_import)
    p = data.add_parser("use", help="choose the course's table: an imported snapshot's name, or 'embedded'")
    p.add_argument("name")
    p.set_defaults(func=_cmd_data_use)
    p = data.add_parser("fetch", help="fetch the course's galaxy table from SkyServer (needs network)")
    p.add_argument("--rows", type=int, default=25_000)
    p.add_argument("--release", type=int, default=17)
    p.add_argument("--extra", nargs="*", default=[], choices=["size", "shape", "mpa_jhu"])
    p.add_argument("--refresh", action="store_true", help="fetch again even if cached")
    p.add_argument("--page-size", type=int, default=50_000, help="rows per SkyServer request (at most 500,000)")
    p.add_argument("--timeout", type=float, default=660.0,
                   help="seconds to wait for one page (SkyServer itself stops a query after 600)")
    p.add_argument("--show-sql", action="store_true", help="print the SQL and stop")
    p.set_defaults(func=_cmd_data_fetch)
    p = data.add_parser("info", help="list what is cached or imported, and which table the course uses")
    p.set_defaults(func=_cmd_data_info)

    course = sub.add_parser("course", help="run the notebooks").add_subparsers(dest="action", required=True)
    p = course.add_parser("run", help="execute the notebooks in order into build/course and print a summary")
    p.add_argument("numbers", nargs="*", help="notebook numbers, e.g. 01 02 (default: all)")
    p.set_defaults(func=_cmd_course_run)
    p = course.add_parser("generate", help="write .ipynb notebooks from the jupytext sources")
    p.add_argument("numbers", nargs="*", help="notebook numbers (default: all)")
    p.add_argument("--out", default="build/notebooks", help="target folder (default build/notebooks)")
    p.add_argument("--student", action="store_true", help="strip cells tagged 'solution'")
    p.set_defaults(func=_cmd_course_generate)
    p = course.add_parser("render", help="write static HTML of the executed notebooks and an index to build/site")
    p.set_defaults(func=_cmd_course_render)

    from galmeta.train import build_parser as train_parser

    p = sub.add_parser("train", help="meta-train on galaxy tasks (data-parallel under torchrun: "
                                     "torchrun --nproc_per_node N -m galmeta.train ...)")
    train_parser(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("student", help="make student copies (solutions removed, no outputs) in ./build/student; "
                                       "edited copies are kept beside the new ones")
    p.add_argument("numbers", nargs="*", help="notebook numbers (default: all)")
    p.add_argument("--out", default=None, help="target folder (default ./build/student, relative to where you are)")
    p.set_defaults(func=_cmd_student)
    return parser


def main(argv=None):
    try:
        parser = build_parser()  # imports galmeta.config, which reads GALMETA_MODE
    except ValueError as exc:
        print(f"galmeta: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        from galmeta.data import GalmetaDataError  # imports galmeta.config, which reads GALMETA_MODE
        from galmeta.safe_files import LockTimeout

        args.func(args)
    except (ValueError, OSError) as exc:  # includes ConfigError, FileNotFoundError, NotADirectoryError
        print(f"galmeta: error: {exc}", file=sys.stderr)
        return 2
    except (GalmetaDataError, LockTimeout) as exc:
        print(f"galmeta: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
