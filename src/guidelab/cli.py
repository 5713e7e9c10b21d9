"""The ``guidelab`` command line.

    guidelab spec list                       built-in study specs
    guidelab spec show NAME                  a spec's TOML, to copy and edit
    guidelab run SPEC [--out DIR] [--set key.path=value ...] [--backend local|ray]
                      [--address ADDR] [--connect-timeout S] [--quiet] [--wait]
    guidelab report DIR                      the HTML page of a results folder
    guidelab verify DIR [--quarantine]       check every file of a results folder
    guidelab reproduce li-jiao-gmm [--out DIR] [--trials N] [--steps T] [--sampler NAME] ...

Every bad input (a spec key, an option, an output folder) stops with one line
``error: ...`` on stderr and exit status 2; ``--debug`` (before or after the command) shows the
traceback instead. Ctrl-C (SIGINT) or SIGTERM stops a run: the finished units are kept and the
command to resume is printed; the exit status is 130 after SIGINT, 143 after SIGTERM. Guidance
strengths are Ho & Salimans' w (w = 0 unguided; the "CFG scale" is
1 + w). One run writes a results folder at a time: another run into it stops at once with a
line naming the holder, or waits with ``--wait``. ``guidelab verify`` exits 0 when every file
passes, 1 when some do not (one line each), 2 for bad input.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import typer

__all__ = ["app"]

app = typer.Typer(help="Exact measurements of what guidance does to diffusion samples.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
spec_app = typer.Typer(help="Built-in study specs: list them, show one to copy and edit.",
                       no_args_is_help=True)
app.add_typer(spec_app, name="spec")

_STATE = {"debug": False}
DEBUG_HELP = "Show the full traceback of an error."
WAIT_HELP = ("If another run is writing the results folder, wait for it to finish (default: "
             "stop at once with a message naming it).")


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


@contextlib.contextmanager
def _errors(debug: bool = False, out: Path | None = None) -> Iterator[None]:
    """Turn bad input (ValueError, OSError: spec, option, folder) into ``error: ...`` and exit
    status 2, unless --debug; an interruption says where the finished units are.

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
        text = " ".join(str(error).split()) or type(error).__name__
        typer.echo(f"error: {text}", err=True)
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


def _header(spec) -> str:
    """The table's header line: Q's columns when the study measures class probabilities, the
    mass outside the support for a support study, else the metrics' own columns."""
    if "class_probability" in spec.metrics:
        return HEADER
    if "support" in spec.metrics:
        return SUPPORT_HEADER
    return GENERIC_HEADER


def _generic_row(row: dict, extra: list[str]) -> str:
    """sampler, class, w, then the first numeric columns of the row's metrics."""
    from .studies.runner import PROVENANCE_COLUMNS

    skip = {"class", "w", "sampler", "steps", *PROVENANCE_COLUMNS, *extra}
    shown = [f"{key}={_number(value, '.4g')}" for key, value in row.items()
             if key not in skip and not key.startswith("record_")
             and (value is None or isinstance(value, (int, float))
                  and not isinstance(value, bool))][:6]
    swept = "  " + " ".join(f"{key}={row.get(key)}" for key in extra) if extra else ""
    return (f"{row['sampler']:<15} {row['class']:>5} {row['w']:>8.4g}  " + " ".join(shown)
            + swept)


def _format_row(row: dict, extra: list[str] = ()) -> str:
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
            f"{_number(row['q_high'], '.4f'):>7}] {_number(row['pareto_khat'], '.2f'):>6} "
            f"{_number(row['q_top_share'], '.4f'):>7} {_number(row['p_mean'], '.4f'):>7} "
            f"{_number(row['accuracy'], '.4f'):>7} {decreased:>8} "
            f"{_number(row.get('inv_prior'), '.4f'):>8}{flag}{swept}")


def _extra_columns(spec) -> list[str]:
    """Swept keys the table shows after the standard columns."""
    return [key for key in spec.swept_keys if key not in ("class", "sampler.name")]


def _print_pooled(result, extra: list[str]) -> None:
    """The rows pooled over classes (class = all), the paper's statistic."""
    if not result.pooled or "q_mean" not in result.pooled[0] and "outside" not in \
            result.pooled[0]:
        return
    typer.echo("pooled over classes (class = all: every sample of every class together)")
    for row in result.pooled:
        row = dict(row, n=row.get("n", 0) or 0, support_n=row.get("support_n", 0) or 0)
        typer.echo(_format_row(row, extra))


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
    typer.echo(title)
    typer.echo("w is Ho & Salimans' guidance strength (w = 0 unguided, CFG scale = 1 + w); "
               "interval: see interval_method in the results; '!' marks an unreliable mean")
    typer.echo(_header(spec) + ("  " + " ".join(extra) if extra else ""))
    done = store.check(log=note)  # files that fail a check are quarantined and recomputed
    if done:
        order = [unit.id for unit in expand_units(spec) if unit.id in done]
        for row in store.read_rows(order):
            typer.echo(_format_row(row, extra))

    def on_unit(result) -> None:
        for row in result.rows:
            tqdm.write(_format_row(row, extra))

    result = run_spec(spec, out, backend=backend_obj, progress=not quiet, on_unit=on_unit)
    _print_pooled(result, extra)
    _print_warnings(result.rows)
    computed, skipped = len(result.computed), len(result.skipped)
    typer.echo(f"{len(result.units)} units ({computed} computed now, {skipped} already there) "
               f"in {result.seconds:.1f} s")
    typer.echo(f"  results (Parquet, one file per unit): {out / 'units'}")
    typer.echo(f"  spec: {out / 'spec.toml'}")
    typer.echo(f"  table: {result.csv}")
    if report:
        path = _write_report(out, debug)
        if path is not None:
            typer.echo(f"  report (HTML): {path}")
    return result


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

@spec_app.command("list")
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


@spec_app.command("show")
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

@app.command("run")
def run(
    spec: str = typer.Argument(..., help="A spec file (TOML) or a built-in spec name."),
    out: Path | None = typer.Option(None, "--out", help="Results folder (default "
                                    "results/<spec name>). A rerun with the same spec "
                                    "computes only the missing units."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: key.path=TOML value, "
                                   "e.g. --set trials=400 --set 'sweep.w=[0, 1, 10]'. "
                                   "Repeatable."),
    backend: str = typer.Option("local", "--backend", help="local (this process) or ray "
                                "(a Ray cluster or a local instance); the same results."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to connect to "
                                       "(default: start a local Ray instance)."),
    connect_timeout: float = typer.Option(30.0, "--connect-timeout", help="Seconds to reach "
                                          "the Ray cluster at --address before giving up."),
    workers: int | None = typer.Option(None, "--workers", help="Units at a time, one CPU "
                                       "each: threads of this process (local, default up to "
                                       "4) or CPUs of a local Ray instance (default 2)."),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Run a study: every unit of its sweep, stored in OUT as one Parquet file per unit."""
    from .studies.spec import load_spec

    with _errors(debug, out):
        resolved = load_spec(spec, set_)
        out = out if out is not None else Path("results") / resolved.name
        if backend not in ("local", "ray"):
            raise ValueError(f"backend: expected local or ray, got {backend!r}")
        _run_study(resolved, out, backend=backend, address=address, quiet=quiet,
                   report=not no_report, debug=debug, workers=workers, wait=wait,
                   connect_timeout=connect_timeout,
                   title=f"{resolved.name}: {resolved.description}".rstrip(": "))


@app.command("report")
def report(
    run_dir: Path = typer.Argument(..., help="A results folder written by `guidelab run`."),
    out: Path | None = typer.Option(None, "--out", help="The HTML file to write (default "
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
        typer.echo(f"wrote {write_report(run_dir, out=out)}")


@app.command("verify")
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


@app.command("reproduce")
def reproduce(
    name: str = typer.Argument(..., help="A built-in study (guidelab spec list)."),
    out: Path | None = typer.Option(None, "--out", help="Results folder [results/NAME]."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: key.path=TOML value. "
                                   "Repeatable."),
    trials: int | None = typer.Option(None, "--trials", help="Samples per class and strength "
                                      "(alias of --set trials=N)."),
    steps: int | None = typer.Option(None, "--steps", help="Sampler steps T (sampler.steps)."),
    sampler: str | None = typer.Option(None, "--sampler", help="A registered sampler "
                                       "(sampler.name)."),
    schedule: str | None = typer.Option(None, "--schedule", help="li_jiao, linear or cosine "
                                        "(sampler.schedule)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1, auto."),
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
    backend: str = typer.Option("local", "--backend", help="local or ray."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address."),
    workers: int | None = typer.Option(None, "--workers", help="Units at a time, one CPU "
                                       "each."),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Run a built-in study (li-jiao-gmm, li-jiao-1d, li-jiao-digits, learned-vs-exact,
    support-leak, smoke, ...) into OUT: units/*.parquet, results.csv, report.html, q_vs_w.png.

    The options are aliases of spec keys (--trials is --set trials=N, ...); `guidelab spec show
    NAME` prints the spec they modify.
    """
    from .report.plots import plot_q_vs_w
    from .studies.aliases import reproduce_spec

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
            figure = plot_q_vs_w(result.rows, out / "q_vs_w.png",
                                 title=f"{spec.name}: {spec.sampler.name}, "
                                       f"T = {spec.sampler.steps}, {spec.trials} trials")
            typer.echo(f"  figure: {figure}")
        profile = _write_profile(result.rows, out)
        if profile is not None:
            typer.echo(f"  profile (where in noise level guidance lowers Q): {profile}")


def _write_profile(rows: list[dict], out: Path) -> Path | None:
    """OUT/profile.png from the profiles the study stored (the ``profile`` metric), one curve
    per class and strength; None when the study has none."""
    import json

    from .exact import DecreaseProfile
    from .report.profile import plot_profile

    profiles = [DecreaseProfile.from_dict(json.loads(row["profile"])) for row in rows
                if row.get("profile")]
    return plot_profile(profiles, out / "profile.png") if profiles else None
