"""The ``guidelab`` command line.

    guidelab spec list                       built-in study specs
    guidelab spec show NAME                  a spec's TOML, to copy and edit
    guidelab run SPEC [--out DIR] [--set key.path=value ...] [--backend local|ray]
                      [--address ADDR] [--connect-timeout S] [--quiet] [--wait]
    guidelab report DIR                      the HTML page of a results folder
    guidelab verify DIR [--quarantine]       check every file of a results folder
    guidelab reproduce li-jiao-gmm [--out DIR] [--trials N] [--steps T] [--sampler NAME] ...

Every bad input (a spec key, an option, an output folder) stops with one line
``error: ...`` per problem on stderr (a spec lists every problem of its structure at once) and
exit status 2; ``--debug`` (before or after the command) shows the traceback instead. A problem
with the folder given as ``--out`` names ``--out``. Ctrl-C (SIGINT) or SIGTERM stops a run: the
finished units are kept and the command to resume is printed; the exit status is 130 after
SIGINT, 143 after SIGTERM. Guidance strengths are Ho & Salimans' w (w = 0 unguided; the "CFG
scale" is 1 + w). One run writes a results folder at a time: another run into it stops at
once with a line naming the holder, or waits with ``--wait``. ``guidelab verify`` exits 0 when
every file passes, 1 when some do not (one line each), 2 for bad input.

Progress goes to stderr (tqdm bars, and one line as each long step starts: training, an exact
grid, a profile, the report; ``--quiet`` turns the bars off); the table, the paths written and,
last, where the time went go to stdout. The table rounds a KL divergence (never negative) that
came out negative by rounding to 0: a value below 0 by less than its stated error (``kl_err``),
or by less than 1e-12 where no error is stated; the stored results keep the computed value.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import typer

__all__ = ["app"]


def _no_flag_metavar(params: list) -> list:
    """Flags (``--quiet``, ``--help``) take no value: show none in ``--help`` (Typer's Rich
    help writes a type, ``<bool>``, beside every option)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Command(typer.core.TyperCommand):
    def get_params(self, ctx) -> list:
        return _no_flag_metavar(super().get_params(ctx))


class _Group(typer.core.TyperGroup):
    def get_params(self, ctx) -> list:
        return _no_flag_metavar(super().get_params(ctx))


app = typer.Typer(help="Exact measurements of what guidance does to diffusion samples.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  cls=_Group)
spec_app = typer.Typer(help="Built-in study specs: list them, show one to copy and edit.",
                       no_args_is_help=True, cls=_Group)
app.add_typer(spec_app, name="spec")

_STATE = {"debug": False}
DEBUG_HELP = "Show the full traceback of an error."
WAIT_HELP = ("If another run is writing the results folder, wait for it to finish (default: "
             "stop at once with a message naming it).")
QUIET_HELP = "No progress bars (the messages of long steps and the table stay)."
# Help texts state defaults as "(default: x)", Typer's own "[default: x]" is off
# (show_default=False): one form everywhere, and no text like "[x]" (a default, a placeholder),
# which the markup of Typer's Rich help would take for a style and drop.


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP)) -> None:
    """guidelab: exact scores, class posteriors and guided-sampler measurements."""
    _STATE["debug"] = debug


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like SIGINT's KeyboardInterrupt."""


def _on_sigterm(signum, frame) -> None:
    _STATE["terminated"] = True  # kept even if a library re-raises a plain KeyboardInterrupt
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while the command runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _error_lines(error: BaseException, out_option: bool) -> list[str]:
    """The ``error: ...`` lines of a bad input: one per problem of a spec, else one; a problem
    of the results folder (``out: ...``) names ``--out`` when the folder came from that
    option."""
    from .studies.spec import SpecError

    texts = [problem.line for problem in error.problems] if isinstance(error, SpecError) \
        else [str(error)]
    lines = []
    for text in texts:
        text = " ".join(text.split()) or type(error).__name__
        if out_option and text.startswith("out: "):
            text = "--out: " + text[len("out: "):]
        lines.append(f"error: {text}")
    return lines


@contextlib.contextmanager
def _errors(debug: bool = False, out: Path | None = None) -> Iterator[None]:
    """Turn bad input (ValueError, OSError: spec, option, folder) into ``error: ...`` lines
    (one per problem of a spec) and exit status 2, unless --debug; an interruption says where
    the finished units are. ``out``: the ``--out`` option's value (None when not given).

    SIGTERM is handled like SIGINT (Ctrl-C): the units in flight are lost, the finished ones
    are kept, the resume hint is printed; the exit status is 130 after SIGINT and 143
    (128 + 15) after SIGTERM."""
    from .studies.backends import BackendError

    _STATE["terminated"] = False
    try:
        with _sigterm_as_interrupt():
            yield
    except typer.Exit:
        raise
    except (ValueError, OSError, BackendError) as error:
        if debug or _STATE["debug"]:
            raise
        for line in _error_lines(error, out_option=out is not None):
            typer.echo(line, err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt as interrupt:
        if debug or _STATE["debug"]:
            raise
        terminated = isinstance(interrupt, Terminated) or _STATE["terminated"]
        where = f"; finished units are saved in {out}, run the same command to resume" \
            if out is not None else ""
        typer.echo(f"{'terminated' if terminated else 'interrupted'}{where}", err=True)
        raise typer.Exit(code=143 if terminated else 130) from None


# ----------------------------------------------------------------------------- tables

HEADER = (f"{'sampler':<15} {'class':>5} {'w':>8} {'n':>6} {'Q':>9} {'interval':>18} "
          f"{'k-hat':>6} {'top0.1%':>7} {'E[p]':>7} {'acc':>7} {'p down':>8} {'1/p(c)':>8}")


def _number(value, spec: str) -> str:
    if value is None:
        return "-"  # does not apply (no sample outside the support, no k-hat yet, ...)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


SUPPORT_HEADER = (f"{'sampler':<15} {'class':>5} {'w':>8} {'n':>6} {'outside':>8} "
                  f"{'interval':>19} {'mean dist':>9}")


GENERIC_HEADER = f"{'sampler':<15} {'class':>5} {'w':>8}  columns of the study's metrics"


GRID_HEADER = f" {'grid Q':>16}"
"""The exact grid's Q (``grid_q`` +- ``grid_q_err``), after the Monte Carlo interval."""


def _grid_column(spec) -> bool:
    """Whether the Q table has the exact grid's Q: the study measures class probabilities and
    its rows have ``grid_q`` values (the ``exact_grid`` metric)."""
    return "class_probability" in spec.metrics and "exact_grid" in spec.metrics


def _grid_q(row: dict) -> str:
    """``grid_q +-grid_q_err`` of a row, its value alone without an error (``refine =
    false``), blank where the row has none (a strength the grid skipped, a pooled row)."""
    value = row.get("grid_q")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    shown = f"{value:.4f}" if abs(value) < 1e5 else f"{value:.3e}"
    error = row.get("grid_q_err")
    if not isinstance(error, (int, float)) or not math.isfinite(error):
        return shown
    return f"{shown} +-{error:.1g}"


NONNEGATIVE = {"kl": "kl_err"}
"""Columns that cannot be negative (KL divergences) -> the column of their stated error."""
ROUNDING = 1e-12
"""Below 0 by less than this (or by less than the stated error) is rounding: shown as 0."""


def _shown(key: str, value, row: dict):
    """``value`` as the table shows it: a nonnegative quantity (:data:`NONNEGATIVE`) that came
    out negative by rounding (by less than its stated error, else by less than
    :data:`ROUNDING`) as 0.0; every other value unchanged (the stored results never change)."""
    if key not in NONNEGATIVE or not isinstance(value, float) or not value < 0:
        return value
    error = row.get(NONNEGATIVE[key])
    tolerance = error if isinstance(error, float) and math.isfinite(error) else 0.0
    return 0.0 if -value <= max(tolerance, ROUNDING) else value


def _header(spec) -> str:
    """The table's header line: Q's columns when the study measures class probabilities (and
    the exact grid's Q beside them when it has one), the mass outside the support for a support
    study, else the metrics' own columns."""
    if "class_probability" in spec.metrics:
        if _grid_column(spec):
            cut = HEADER.index(" k-hat")
            return HEADER[:cut] + GRID_HEADER + HEADER[cut:]
        return HEADER
    if "support" in spec.metrics:
        return SUPPORT_HEADER
    return GENERIC_HEADER


def _generic_row(row: dict, extra: list[str]) -> str:
    """sampler, class, w, then the first numeric columns of the row's metrics."""
    from .studies.runner import PROVENANCE_COLUMNS

    skip = {"class", "w", "sampler", "steps", *PROVENANCE_COLUMNS, *extra}
    shown = [f"{key}={_number(_shown(key, value, row), '.4g')}" for key, value in row.items()
             if key not in skip and not key.startswith("record_")
             and (value is None or isinstance(value, (int, float))
                  and not isinstance(value, bool))][:6]
    swept = "  " + " ".join(f"{key}={row.get(key)}" for key in extra) if extra else ""
    return (f"{row['sampler']:<15} {row['class']:>5} {row['w']:>8.4g}  " + " ".join(shown)
            + swept)


def _format_row(row: dict, extra: list[str] = (), grid: bool = False) -> str:
    """One line of the table (``grid``: with the exact grid's Q column)."""
    if "q_mean" not in row and "outside" not in row:
        return _generic_row(row, list(extra))
    if "q_mean" not in row and "outside" in row:
        swept = "  " + " ".join(f"{key}={row.get(key)}" for key in extra) if extra else ""
        return (f"{row['sampler']:<15} {row['class']:>5} {row['w']:>8.4g} "
                f"{row['support_n']:>6} {_number(row['outside'], '.4f'):>8} "
                f"[{_number(row['outside_low'], '.4f')}, {_number(row['outside_high'], '.4f')}] "
                f"{_number(row.get('mean_distance_outside'), '.4f'):>9}{swept}")
    decreased = row.get("frac_p_decreased")
    decreased = "" if decreased is None else _number(decreased, ".4f")
    flag = "" if row.get("q_reliable") else "  !"
    swept = "  " + " ".join(f"{key}={row.get(key)}" for key in extra) if extra else ""
    return (f"{row['sampler']:<15} {row['class']:>5} {row['w']:>8.4g} {row['n']:>6} "
            f"{_number(row['q_mean'], '.4f'):>9} [{_number(row['q_low'], '.4f'):>7}, "
            f"{_number(row['q_high'], '.4f'):>7}]{f' {_grid_q(row):>16}' if grid else ''} "
            f"{_number(row['pareto_khat'], '.2f'):>6} "
            f"{_number(row['q_top_share'], '.4f'):>7} {_number(row['p_mean'], '.4f'):>7} "
            f"{_number(row['accuracy'], '.4f'):>7} {decreased:>8} "
            f"{_number(row.get('inv_prior'), '.4f'):>8}{flag}{swept}")


def _extra_columns(spec) -> list[str]:
    """Swept keys the table shows after the standard columns."""
    return [key for key in spec.swept_keys if key not in ("class", "sampler.name")]


def _print_pooled(result, extra: list[str], grid: bool = False) -> None:
    """The rows pooled over classes (class = all), the paper's statistic."""
    if not result.pooled or "q_mean" not in result.pooled[0] and "outside" not in \
            result.pooled[0]:
        return
    typer.echo("pooled over classes (class = all: every sample of every class together)")
    for row in result.pooled:
        row = dict(row, n=row.get("n", 0) or 0, support_n=row.get("support_n", 0) or 0)
        typer.echo(_format_row(row, extra, grid))


def _print_warnings(rows: list[dict]) -> None:
    warnings = sorted({(row["sampler"], row["class"], row["w"], text) for row in rows
                       for text in (row.get("warnings") or "").split(" | ") if text})
    for sampler, c, strength, text in warnings:
        typer.echo(f"warning ({sampler}, class {c}, w = {strength:g}): {text}")
    nonfinite = sum(row.get("n_nonfinite") or 0 for row in rows)
    if nonfinite:
        typer.echo(f"warning: {nonfinite} samples were non-finite; they were counted in "
                   f"n_nonfinite and left out of every average")


def _run_study(spec, out: Path, *, backend: str, address: str | None, quiet: bool,
               report: bool, debug: bool, title: str, workers: int | None = None,
               wait: bool = False, connect_timeout: float | None = None) -> object:
    """Run a resolved spec into ``out``, printing the table as units finish; the folder is
    locked for the whole run (``wait``: wait for another run holding it, else refuse)."""
    from tqdm.auto import tqdm

    from .studies.backends import get_backend
    from .studies.store import ResultStore

    if address and backend != "ray":
        raise ValueError("address: --address needs --backend ray")
    if workers is not None and workers < 1:
        raise ValueError(f"workers: expected a positive integer, got {workers}")
    if workers is not None and address:
        raise ValueError("workers: --workers sets a local Ray instance's CPUs; with --address "
                         "the cluster decides")
    if connect_timeout is not None and not connect_timeout > 0:
        raise ValueError(f"connect_timeout: --connect-timeout expects a positive number of "
                         f"seconds, got {connect_timeout:g}")
    options = {"address": address, "num_cpus": workers} if backend == "ray" else {
        "workers": workers}
    if backend == "ray" and connect_timeout is not None:
        options["connect_timeout"] = connect_timeout
    backend_obj = get_backend(backend, **options)
    probe = getattr(backend_obj, "probe", None)
    if callable(probe):
        probe()  # an unreachable cluster stops here: nothing is written to the folder
    store = ResultStore(out)

    def note(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    try:
        with store.lock(wait=wait, log=note):  # one writer per folder, for the whole run
            store.open(spec)  # a bad folder or another spec's results stop here
            return _run_open_study(spec, out, store, backend_obj, quiet=quiet, report=report,
                                   debug=debug, title=title, note=note)
    finally:
        close = getattr(backend_obj, "close", None)
        if callable(close):
            close()  # the cluster connection probe() made, when no run used it


def _run_open_study(spec, out: Path, store, backend_obj, *, quiet: bool, report: bool,
                    debug: bool, title: str, note) -> object:
    """The body of :func:`_run_study`, under the folder's lock with the store open."""
    from tqdm.auto import tqdm

    from .studies.run import run_spec
    from .studies.units import expand_units

    extra = _extra_columns(spec)
    grid = _grid_column(spec)
    typer.echo(title)
    typer.echo("w is Ho & Salimans' guidance strength (w = 0 unguided, CFG scale = 1 + w); "
               "interval: see interval_method in the results; '!' marks an unreliable mean")
    typer.echo(_header(spec) + ("  " + " ".join(extra) if extra else ""))
    done = store.check(log=note)  # files that fail a check are quarantined and recomputed
    if done:
        order = [unit.id for unit in expand_units(spec) if unit.id in done]
        for row in store.read_rows(order):
            typer.echo(_format_row(row, extra, grid))

    def on_unit(result) -> None:
        for row in result.rows:
            tqdm.write(_format_row(row, extra, grid))

    # messages (training, each exact grid and profile as it starts) go to stderr, with the bars
    result = run_spec(spec, out, backend=backend_obj, progress=not quiet, on_unit=on_unit,
                      log=note)
    _print_pooled(result, extra, grid)
    _print_warnings(result.rows)
    computed, skipped = len(result.computed), len(result.skipped)
    typer.echo(f"{len(result.units)} units ({computed} computed now, {skipped} already there) "
               f"in {result.seconds:.1f} s")
    typer.echo(f"  results (Parquet, one file per unit): {out / 'units'}")
    typer.echo(f"  spec: {out / 'spec.toml'}")
    typer.echo(f"  table: {result.csv}")
    if report:
        note(f"{spec.name}: writing the HTML report")
        began = time.perf_counter()
        path = _write_report(out, debug)
        result.timings["report"] = time.perf_counter() - began
        if path is not None:
            typer.echo(f"  report (HTML): {path}")
    return result


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _print_times(result, started: float) -> None:
    """Where the time of the command went: in all; training and artifacts, the report; and,
    summed over the units computed now (which may run in parallel), the samplers and each
    metric's measurements, slowest first."""
    timings = getattr(result, "timings", None) or {}
    parts = [f"training and artifacts {_seconds(timings.get('artifacts', 0.0))}"]
    if "report" in timings:
        parts.append(f"report {_seconds(timings['report'])}")
    typer.echo(f"time: {_seconds(time.perf_counter() - started)} in all; "
               + ", ".join(parts))
    if result.computed:
        metrics = sorted((timings.get("metrics") or {}).items(), key=lambda item: -item[1])
        spent = [f"sampling {_seconds(timings.get('sampling', 0.0))}",
                 *(f"{name} {_seconds(seconds)}" for name, seconds in metrics)]
        count = len(result.computed)
        typer.echo(f"  summed over the {count} unit{'s' if count > 1 else ''} computed now: "
                   + ", ".join(spent))


def _write_report(out: Path, debug: bool) -> Path | None:
    try:
        from .report import write_report
    except ImportError:
        return None
    try:
        return Path(write_report(out))
    except Exception as error:  # the results are safe; the report can be rewritten
        if debug or _STATE["debug"]:
            raise
        typer.echo(f"warning: the HTML report could not be written ({type(error).__name__}: "
                   f"{error}); the results are complete, try `guidelab report {out}`",
                   err=True)
        return None


# ----------------------------------------------------------------------------- spec

@spec_app.command("list", cls=_Command)
def spec_list() -> None:
    """The built-in studies with their descriptions, then every registered part (families,
    data sources, models, judges, samplers, metrics) and where it came from."""
    from .studies.plugins import available, load_plugins
    from .studies.spec import builtin_specs

    specs = builtin_specs()
    width = max(map(len, specs), default=0)
    typer.echo("studies (guidelab reproduce NAME, guidelab spec show NAME):")
    for name, description in specs.items():
        typer.echo(f"  {name:<{width}}  {description}")
    for kind, entries in available().items():
        if not entries:
            continue
        typer.echo(f"{kind}:")
        for name, origin in entries:
            typer.echo(f"  {name:<22} {origin}")
    for problem in load_plugins():
        typer.echo(f"warning: {problem}", err=True)


@spec_app.command("show", cls=_Command)
def spec_show(
    name: str = typer.Argument(..., help="A built-in spec name, or a spec file."),
    resolved: bool = typer.Option(False, "--resolved", help="Print the resolved spec: every "
                                  "default filled in, as a results folder records it."),
    set_: list[str] = typer.Option([], "--set", help="Override a key with --resolved: "
                                   "key.path=TOML value."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Print a spec as TOML, to copy into a file, edit, and run with `guidelab run FILE`."""
    from .studies.spec import builtin_spec_text, builtin_specs, load_spec, spec_to_toml

    with _errors(debug):
        if resolved or set_:
            typer.echo(spec_to_toml(load_spec(name, set_)), nl=False)
        elif Path(name).is_file():
            typer.echo(Path(name).read_text(), nl=False)
        else:
            if name not in builtin_specs():
                raise ValueError(f"spec: unknown built-in spec {name!r}; expected one of "
                                 f"{', '.join(builtin_specs())} (or a spec file)")
            typer.echo(builtin_spec_text(name), nl=False)


# ----------------------------------------------------------------------------- run, report

@app.command("run", cls=_Command)
def run(
    spec: str = typer.Argument(..., help="A spec file (TOML) or a built-in spec name."),
    out: Path | None = typer.Option(None, "--out", help="Results folder (default: "
                                    "results/NAME, NAME the spec's name). A rerun with the "
                                    "same spec computes only the missing units."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: key.path=TOML value, "
                                   "e.g. --set trials=400 --set 'sweep.w=[0, 1, 10]'. "
                                   "Repeatable."),
    backend: str = typer.Option("local", "--backend", show_default=False,
                                help="local (this process) or ray (a Ray cluster or a local "
                                     "instance); the same results (default: local)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to connect to "
                                       "(default: start a local Ray instance)."),
    connect_timeout: float = typer.Option(30.0, "--connect-timeout", show_default=False,
                                          help="Seconds to reach the Ray cluster at --address "
                                               "before giving up (default: 30)."),
    workers: int | None = typer.Option(None, "--workers", help="Units at a time, one CPU "
                                       "each: threads of this process or CPUs of a local Ray "
                                       "instance (default: up to 4 threads locally, 2 CPUs "
                                       "for Ray)."),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Run a study: every unit of its sweep, stored in OUT as one Parquet file per unit."""
    from .studies.spec import load_spec

    started = time.perf_counter()
    with _errors(debug, out):
        resolved = load_spec(spec, set_)
        out = out if out is not None else Path("results") / resolved.name
        if backend not in ("local", "ray"):
            raise ValueError(f"backend: expected local or ray, got {backend!r}")
        result = _run_study(resolved, out, backend=backend, address=address, quiet=quiet,
                            report=not no_report, debug=debug, workers=workers, wait=wait,
                            connect_timeout=connect_timeout,
                            title=f"{resolved.name}: {resolved.description}".rstrip(": "))
        _print_times(result, started)


@app.command("match", cls=_Command)
def match(
    spec: str = typer.Argument(..., help="A spec file (TOML) or a built-in spec name whose "
                               "sweep has the settings to compare (e.g. guidance tables) and "
                               "several strengths w: the coarse sweep."),
    by: str = typer.Option("guidance", "--by", show_default=False,
                           help="The swept key whose settings are compared (default: "
                                "guidance)."),
    target: float = typer.Option(..., "--target", help="The value every setting must reach."),
    column: str = typer.Option("q_mean", "--column", show_default=False,
                               help="The pooled column to match: q_mean (Q), p_mean (mean p), "
                                    "g_mean (mean g), ... (default: q_mean)."),
    out: Path | None = typer.Option(None, "--out", help="Results folder (default: "
                                    "results/NAME-matched): the coarse study in OUT/coarse, "
                                    "one confirming study per setting beside it."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: key.path=TOML value. "
                                   "Repeatable."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Compare settings (guidance rules) at a matched effect: run the coarse sweep, find for
    each setting the w at which its pooled COLUMN reaches TARGET (interpolated between the
    swept strengths that bracket it), then confirm each w on the same noise."""
    from .studies.matching import matched_strengths, run_matched
    from .studies.run import run_spec
    from .studies.spec import load_spec

    with _errors(debug, out):
        resolved = load_spec(spec, set_)
        if by not in resolved.sweep:
            raise ValueError(f"--by: {by!r} is not a swept key of {resolved.name} (swept: "
                             f"{', '.join(resolved.swept_keys)})")
        out = out if out is not None else Path("results") / f"{resolved.name}-matched"
        coarse = run_spec(resolved, out / "coarse", progress=not quiet)
        matches = matched_strengths(coarse.pooled, by, column=column, target=target)
        confirmed = run_matched(resolved, matches, by, out, progress=not quiet)
        typer.echo(f"{column} = {target:g} by {by}, pooled over classes (coarse study: "
                   f"{out / 'coarse'})")
        for found in matches:
            label = found.setting if len(str(found.setting)) <= 60 else \
                str(found.setting)[:57] + "..."
            if found.w is None:
                typer.echo(f"  {label}: not reached between the swept strengths")
                continue
            rows = [r for r in confirmed[found.setting].pooled if r["w"] == found.w]
            value = rows[0].get(column) if rows else None
            typer.echo(f"  {label}: w = {found.w:.4g} (between {found.bracket[0]:g} and "
                       f"{found.bracket[1]:g}); confirmed {column} = "
                       f"{_number(value, '.4g')}")


@app.command("report", cls=_Command)
def report(
    run_dir: Path = typer.Argument(..., help="A results folder written by `guidelab run`."),
    out: Path | None = typer.Option(None, "--out", help="The HTML file to write (default: "
                                    "RUN_DIR/report.html)."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Write RUN_DIR/report.html (or --out): one self-contained page of plots and tables."""
    with _errors(debug, None):
        if not (run_dir / "spec.toml").is_file():
            raise ValueError(f"run_dir: {run_dir} is not a results folder (no spec.toml)")
        try:
            from .report import write_report
        except ImportError as error:
            raise ValueError(f"report: the HTML report is not available ({error})") from None
        typer.echo(f"{run_dir}: writing the HTML report", err=True)
        typer.echo(f"wrote {write_report(run_dir, out=out)}")


@app.command("verify", cls=_Command)
def verify(
    run_dir: Path = typer.Argument(..., help="A results folder written by `guidelab run`."),
    quarantine: bool = typer.Option(False, "--quarantine", help="Move the files that fail into "
                                    "RUN_DIR/quarantine/ (the next run recomputes their "
                                    "units); refused while a run holds the folder."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Check every unit and samples file of RUN_DIR: its checksum, and that it is the unit of
    RUN_DIR/spec.toml its name says. One line per problem, then a summary; read-only unless
    --quarantine. Exit status 0: clean, 1: problems, 2: not a readable results folder."""
    from .studies.store import ResultStore

    with _errors(debug, None):
        store = ResultStore(run_dir, label="run_dir")
        found = store.verify(quarantine=quarantine)
        for problem in found.problems:
            typer.echo(problem.line(run_dir))
        typer.echo(found.summary())
    if found.problems:
        raise typer.Exit(code=1)


# ----------------------------------------------------------------------------- reproduce

def _parse_list(text: str | None, kind, option: str) -> list | None:
    if text is None:
        return None
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        noun = "numbers" if kind is float else "integers"
        raise ValueError(f"{option}: expected comma-separated {noun}, got {text!r}") from None


@app.command("reproduce", cls=_Command)
def reproduce(
    name: str = typer.Argument(..., help="A built-in study (guidelab spec list)."),
    out: Path | None = typer.Option(None, "--out", help="Results folder (default: "
                                    "results/NAME)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: key.path=TOML value. "
                                   "Repeatable."),
    trials: int | None = typer.Option(None, "--trials", help="Samples per class and strength "
                                      "(alias of --set trials=N)."),
    steps: int | None = typer.Option(None, "--steps", help="Sampler steps T (sampler.steps)."),
    sampler: str | None = typer.Option(None, "--sampler", help="A registered sampler "
                                       "(sampler.name)."),
    schedule: str | None = typer.Option(None, "--schedule", help="li_jiao, linear or cosine "
                                        "(sampler.schedule)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 or auto "
                                      "(device)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of all noise; every w shares "
                                    "it."),
    w: str | None = typer.Option(None, "--w", help="Comma-separated strengths w (0 is always "
                                 "added) (sweep.w)."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated classes "
                                       "(sweep.class)."),
    allow_negative: bool = typer.Option(False, "--allow-negative",
                                        help="Accept w < 0 (guidance away from the class)."),
    reference_steps: int | None = typer.Option(None, "--reference-steps",
                                               help="Steps of the exact reverse kernel at "
                                                    "w = 0 (reference.steps)."),
    float64: bool = typer.Option(False, "--float64", help="Sample in float64 (dtype)."),
    profile_w: float | None = typer.Option(None, "--profile-w", help="Strength of the "
                                           "guidance-effect profile (metric_options.profile.w)."),
    backend: str = typer.Option("local", "--backend", show_default=False,
                                help="local or ray (default: local)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address "
                                       "(default: start a local Ray instance)."),
    workers: int | None = typer.Option(None, "--workers", help="Units at a time, one CPU "
                                       "each (default: up to 4 threads locally, 2 CPUs for "
                                       "Ray)."),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Run a built-in study (li-jiao-gmm, li-jiao-1d, li-jiao-digits, learned-vs-exact,
    support-leak, smoke, ...) into OUT: units/*.parquet, results.csv, report.html, q_vs_w.png.

    The options are aliases of spec keys (--trials is --set trials=N, ...); an option left out
    keeps the spec's value. `guidelab spec show NAME` prints the spec they modify.
    """
    from .report.plots import plot_q_vs_w
    from .studies.aliases import reproduce_spec

    started = time.perf_counter()
    with _errors(debug, out):
        strengths = _parse_list(w, float, "--w")
        class_list = _parse_list(classes, int, "--classes")
        spec = reproduce_spec(name, overrides=set_, trials=trials, steps=steps,
                              sampler=sampler, schedule=schedule, device=device, seed=seed,
                              strengths=strengths, classes=class_list,
                              allow_negative=allow_negative or None,
                              reference_steps=reference_steps,
                              dtype="float64" if float64 else None, profile_w=profile_w)
        out = out if out is not None else Path("results") / spec.name
        title = f"{spec.name}: {spec.description}".rstrip(": ")
        result = _run_study(spec, out, backend=backend, address=address, quiet=quiet,
                            report=True, debug=debug, title=title, workers=workers,
                            wait=wait)
        if "class_probability" in spec.metrics:
            figure = plot_q_vs_w(result.rows + result.pooled, out / "q_vs_w.png",
                                 title=f"{spec.name}: {spec.sampler.name}, "
                                       f"T = {spec.sampler.steps}, {spec.trials} trials")
            typer.echo(f"  figure: {figure}")
        profile = _write_profile(result.rows, out)
        if profile is not None:
            typer.echo(f"  profile (where in noise level guidance lowers Q): {profile}")
        _print_times(result, started)


def _write_profile(rows: list[dict], out: Path) -> Path | None:
    """OUT/profile.png from the profiles the study stored (the ``profile`` metric), one curve
    per class and strength; None when the study has none."""
    import json

    from .exact import DecreaseProfile
    from .report.profile import plot_profile

    profiles = [DecreaseProfile.from_dict(json.loads(row["profile"])) for row in rows
                if row.get("profile")]
    return plot_profile(profiles, out / "profile.png") if profiles else None
