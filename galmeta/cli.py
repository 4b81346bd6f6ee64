"""The ``galmeta`` command line: data fetch/import/info and running the course.

Exit codes: 0 success, 1 a step failed, 2 bad usage or bad input.
"""
from __future__ import annotations

import argparse
import sys


def _cmd_data_import(args):
    from galmeta.data import import_snapshot

    target = import_snapshot(args.path, name=args.name)
    print(f"imported {args.path} -> {target}")


def _cmd_data_fetch(args):
    from galmeta.data import GalaxyQuery, fetch_galaxies

    query = GalaxyQuery(n_rows=args.rows, data_release=args.release, extra=tuple(args.extra))
    if args.show_sql:
        print(query.sql())
        return
    table = fetch_galaxies(query, refresh=args.refresh)
    print(f"{len(table)} galaxies cached (query {query.cache_key()})")


def _cmd_data_info(args):
    from galmeta.config import data_home
    from galmeta.data import cache_info

    home = data_home(create=False)
    entries = cache_info()
    print(f"data home: {home}")
    if not entries:
        print("  (empty: fetch with `galmeta data fetch` or import with `galmeta data import PATH`)")
    for e in entries:
        print(f"  {e['kind']:<8s} {e['name']:<45s} {e['rows'] if e['rows'] is not None else '?':>7} rows  "
              f"{e['bytes'] / 1e6:6.1f} MB  {e['source']}  {e['when'] or ''}")


def _cmd_course_run(args):
    from galmeta.course import run_course

    run_course(args.numbers or None)


def _cmd_student(args):
    from galmeta.course import make_student_copies

    for path in make_student_copies(args.out, args.numbers or None):
        print(path)
    print("student copies are clean: no solutions, no outputs")


def _cmd_course_render(args):
    from galmeta.course import render_html

    print(render_html())


def build_parser():
    parser = argparse.ArgumentParser(prog="galmeta", description="Meta-learning on SDSS galaxies: course tools.")
    sub = parser.add_subparsers(dest="group", required=True)

    data = sub.add_parser("data", help="fetch, import and list galaxy tables").add_subparsers(dest="action", required=True)
    p = data.add_parser("import", help="import a snapshot file (.csv, .csv.gz, .ecsv, .fits) into the data home")
    p.add_argument("path")
    p.add_argument("--name", help="name in the data home (default: the file name)")
    p.set_defaults(func=_cmd_data_import)
    p = data.add_parser("fetch", help="fetch the course's galaxy table from SkyServer (needs network)")
    p.add_argument("--rows", type=int, default=25_000)
    p.add_argument("--release", type=int, default=17)
    p.add_argument("--extra", nargs="*", default=[], choices=["size", "shape", "mpa_jhu"])
    p.add_argument("--refresh", action="store_true", help="fetch again even if cached")
    p.add_argument("--show-sql", action="store_true", help="print the SQL and stop")
    p.set_defaults(func=_cmd_data_fetch)
    p = data.add_parser("info", help="list what is cached or imported")
    p.set_defaults(func=_cmd_data_info)

    course = sub.add_parser("course", help="run the notebooks").add_subparsers(dest="action", required=True)
    p = course.add_parser("run", help="execute the notebooks in order into build/course and print a summary")
    p.add_argument("numbers", nargs="*", help="notebook numbers, e.g. 01 02 (default: all)")
    p.set_defaults(func=_cmd_course_run)
    p = course.add_parser("render", help="write static HTML of the executed notebooks and an index to build/site")
    p.set_defaults(func=_cmd_course_render)

    p = sub.add_parser("student", help="make student copies (solutions removed, no outputs) in build/student")
    p.add_argument("numbers", nargs="*", help="notebook numbers (default: all)")
    p.add_argument("--out", default=None, help="target folder (default build/student)")
    p.set_defaults(func=_cmd_student)
    return parser


def main(argv=None):
    from galmeta.data import GalmetaDataError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (GalmetaDataError, FileNotFoundError, ValueError) as exc:
        print(f"galmeta: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
