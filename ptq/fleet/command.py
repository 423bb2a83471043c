"""``ptq run [FILE]``: the click command (registered on ``ptq.cli.main``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import click

from ptq.errors import (
    EXIT_FLEET_FAILED,
    EXIT_GATE_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PtqError,
    UsageError,
)

EPILOG = (
    "\b\nExit codes of ptq run:\n"
    f"  {EXIT_OK:>3}  every model converted and passed its gates\n"
    f"  {EXIT_GATE_FAILED:>3}  every model converted, a gate of one or more failed\n"
    f"  {EXIT_FLEET_FAILED:>3}  one or more models failed to convert (the others' outputs and reports are written)\n"
    "    2  the project file or an option is invalid (nothing converted)"
)


@contextlib.contextmanager
def _errors_to_exit_codes(debug: bool) -> Iterator[None]:
    """One line on stderr and the exit code, as ``ptq convert`` does (kept here: the CLI imports
    this command, so this command does not import the CLI)."""
    try:
        yield
    except PtqError as exc:
        click.echo(f"ptq: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("ptq: error: interrupted; the models converted so far keep their outputs", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: one line, details with --debug
        if debug:
            traceback.print_exc()
        click.echo(f"ptq: error: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)", err=True)
        sys.exit(EXIT_INTERNAL)


@click.command("run", epilog=EPILOG, short_help="Convert every model of a project file (ptq.toml), in parallel, one report.")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("-j", "--jobs", type=int, default=1, show_default=True, metavar="N", help="Models converted at a time, each in its own process.")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS", help="Convert the models as Ray tasks on this cluster (pip install '.[ray]' in ptq's repository); models, data and output folders must be on storage every node shares.")
@click.option("--report", "reports", multiple=True, type=click.Path(path_type=Path), metavar="PATH", help="Write the fleet report: .md, .html or .json (adds to the file's report list). Repeatable.")
@click.option("--only", multiple=True, metavar="NAME", help="Convert only these models of the file. Repeatable.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors and the failures.")
@click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")
def run(file, jobs, ray_address, reports, only, quiet, debug) -> None:
    """Convert every model of the project FILE (ptq.toml, or [tool.ptq] in pyproject.toml; default:
    the one in this folder), JOBS at a time; one model's failure does not stop the others. Prints
    one table and writes one fleet report; each model's outputs and report are beside its output."""
    from ptq.fleet import project as project_mod
    from ptq.fleet import report as fleet_report
    from ptq.fleet.runner import FleetResult, run_fleet

    with _errors_to_exit_codes(debug):
        if jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {jobs}")
        path = project_mod.find_project_file(file)
        project = project_mod.load_project(path)
        models = project.models
        if only:
            unknown = sorted(set(only) - {m.name for m in models})
            if unknown:
                raise UsageError(f"--only {', '.join(unknown)}: no such model in {path} (models: {', '.join(m.name for m in models)})")
            models = [m for m in models if m.name in only]
        report_paths = list(project.reports) + [Path(r) for r in reports]
        for report_path in report_paths:
            if report_path.suffix.lower() not in fleet_report.FORMATS:
                raise UsageError(f"--report {report_path}: the extension must be one of {', '.join(fleet_report.FORMATS)}")
            if not report_path.parent.is_dir():
                raise UsageError(f"report {report_path}: folder {report_path.parent} does not exist")

        def progress(result: dict, done: int, total: int) -> None:
            if not quiet:
                status = result["status"] + (f": {result['error']}" if result.get("error") else "")
                click.echo(f"[{done}/{total}] {result['name']}: {status} ({result.get('seconds', 0):.1f} s)", err=True)

        if not quiet:
            click.echo(f"Converting {len(models)} model(s) of {path}, {jobs} at a time...", err=True)
        started = time.perf_counter()
        results, backend = run_fleet([m.job() for m in models], jobs, ray_address, progress)
        result = FleetResult(
            results, time.perf_counter() - started, jobs, backend, str(path),
            dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )  # fmt: skip
        result.totals = fleet_report.totals(result)
        for report_path in report_paths:
            fleet_report.write(result, report_path)
        if not quiet:
            click.echo(fleet_report.headline(result))
            click.echo(fleet_report.text_table(result))
            for report_path in report_paths:
                click.echo(f"  report {report_path}")
        for model in result.failed:
            click.echo(f"ptq: {model['name']} failed: {model['error']}", err=True)
        for model in result.gate_failed:
            for gate in model["gates"]:
                if not gate["passed"]:
                    click.echo(f"ptq: {model['name']}: gate failed: {gate['message']}", err=True)
    sys.exit(EXIT_FLEET_FAILED if result.failed else EXIT_GATE_FAILED if result.gate_failed else EXIT_OK)
