"""The ``guidelab`` command line.

    guidelab spec list                       built-in study specs
    guidelab spec show NAME                  a spec's TOML, to copy and edit
    guidelab run SPEC [--out DIR] [--set key.path=value ...] [--backend local|ray]
                      [--address ADDR] [--quiet]
    guidelab report DIR                      the HTML page of a results folder
    guidelab reproduce li-jiao-gmm [--out DIR] [--trials N] [--steps T] [--sampler NAME] ...

Every bad input (a spec key, an option, an output folder) stops with one line
``error: ...`` on stderr and exit status 2; ``--debug`` (before or after the command) shows the
traceback instead. Guidance strengths are Ho & Salimans' w (w = 0 unguided; the "CFG scale" is
1 + w).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import typer

__all__ = ["app"]

app = typer.Typer(help="Exact measurements of what guidance does to diffusion samples.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
spec_app = typer.Typer(help="Built-in study specs: list them, show one to copy and edit.",
                       no_args_is_help=True)
app.add_typer(spec_app, name="spec")
reproduce = typer.Typer(help="Reproduce the experiments of the papers guidelab checks.",
                        no_args_is_help=True)
app.add_typer(reproduce, name="reproduce")

_STATE = {"debug": False}
DEBUG_HELP = "Show the full traceback of an error."


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP)) -> None:
    """guidelab: exact scores, class posteriors and guided-sampler measurements."""
    _STATE["debug"] = debug


@contextlib.contextmanager
def _errors(debug: bool = False, out: Path | None = None) -> Iterator[None]:
    """Turn bad input (ValueError, OSError: spec, option, folder) into ``error: ...`` and exit
    status 2, unless --debug; an interruption says where the finished units are."""
    from .studies.backends import BackendError

    try:
        yield
    except typer.Exit:
        raise
    except (ValueError, OSError, BackendError) as error:
        if debug or _STATE["debug"]:
            raise
        text = " ".join(str(error).split()) or type(error).__name__
        typer.echo(f"error: {text}", err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        if debug or _STATE["debug"]:
            raise
        where = f"; finished units are saved in {out}, run the same command to resume" \
            if out is not None else ""
        typer.echo(f"interrupted{where}", err=True)
        raise typer.Exit(code=130) from None


# ----------------------------------------------------------------------------- tables

HEADER = (f"{'sampler':<15} {'class':>5} {'w':>8} {'n':>6} {'Q':>9} {'interval':>18} "
          f"{'k-hat':>6} {'top0.1%':>7} {'E[p]':>7} {'acc':>7} {'p down':>8} {'1/p(c)':>8}")


def _number(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def _format_row(row: dict, extra: list[str] = ()) -> str:
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
               report: bool, debug: bool, title: str, workers: int | None = None) -> object:
    """Run a resolved spec into ``out``, printing the table as units finish."""
    from tqdm.auto import tqdm

    from .studies.backends import get_backend
    from .studies.run import run_spec
    from .studies.store import ResultStore
    from .studies.units import expand_units

    if address and backend != "ray":
        raise ValueError("address: --address needs --backend ray")
    if workers is not None and workers < 1:
        raise ValueError(f"workers: expected a positive integer, got {workers}")
    if workers is not None and address:
        raise ValueError("workers: --workers sets a local Ray instance's CPUs; with --address "
                         "the cluster decides")
    options = {"address": address, "num_cpus": workers} if backend == "ray" else {
        "workers": workers}
    backend_obj = get_backend(backend, **options)
    extra = _extra_columns(spec)
    store = ResultStore(out)
    store.open(spec)  # a bad folder or another spec's results stop here, before any output
    typer.echo(title)
    typer.echo("w is Ho & Salimans' guidance strength (w = 0 unguided, CFG scale = 1 + w); "
               "interval: see interval_method in the results; '!' marks an unreliable mean")
    typer.echo(HEADER + ("  " + " ".join(extra) if extra else ""))
    done = store.finished()
    if done:
        order = [unit.id for unit in expand_units(spec) if unit.id in done]
        for row in store.read_rows(order):
            typer.echo(_format_row(row, extra))

    def on_unit(result) -> None:
        for row in result.rows:
            tqdm.write(_format_row(row, extra))

    result = run_spec(spec, out, backend=backend_obj, progress=not quiet, on_unit=on_unit)
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
    """The built-in study specs, with their descriptions."""
    from .studies.spec import builtin_specs

    specs = builtin_specs()
    width = max(map(len, specs), default=0)
    for name, description in specs.items():
        typer.echo(f"{name:<{width}}  {description}")


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
    workers: int | None = typer.Option(None, "--workers", help="Units at a time, one CPU "
                                       "each: threads of this process (local, default up to "
                                       "4) or CPUs of a local Ray instance (default 2)."),
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
                   report=not no_report, debug=debug, workers=workers,
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


# ----------------------------------------------------------------------------- reproduce

def _parse_list(text: str | None, kind, option: str) -> list | None:
    if text is None:
        return None
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        noun = "numbers" if kind is float else "integers"
        raise ValueError(f"{option}: expected comma-separated {noun}, got {text!r}") from None


@reproduce.command("li-jiao-gmm")
def li_jiao_gmm(
    out: Path = typer.Option(Path("results/li-jiao-gmm"), "--out",
                             help="Results folder: units/*.parquet, results.csv, q_vs_w.png, "
                                  "report.html."),
    trials: int | None = typer.Option(None, "--trials",
                                      help="Samples per class and strength [10000]."),
    steps: int | None = typer.Option(None, "--steps", help="Sampler steps T [1000]."),
    sampler: str | None = typer.Option(None, "--sampler",
                                       help="ddpm_type, ddpm_ancestral, ddim, ode_euler, "
                                            "ode_heun or euler_maruyama [ddpm_type]."),
    schedule: str | None = typer.Option(None, "--schedule",
                                        help="li_jiao, linear or cosine [li_jiao]."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1, auto [cpu]."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of all noise; every w shares "
                                    "it [0]."),
    w: str | None = typer.Option(None, "--w", help="Comma-separated strengths w (0 is always "
                                 "added). Default: 0 and 10 log-spaced values in [0.01, 10]."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated classes "
                                       "[all]."),
    allow_negative: bool = typer.Option(False, "--allow-negative",
                                        help="Accept w < 0 (guidance away from the class)."),
    reference_steps: int | None = typer.Option(None, "--reference-steps",
                                               help="Steps of the exact reverse kernel at "
                                                    "w = 0 [50]."),
    float64: bool = typer.Option(False, "--float64", help="Sample in float64."),
    backend: str = typer.Option("local", "--backend", help="local or ray."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address."),
    workers: int | None = typer.Option(None, "--workers", help="Units at a time, one CPU "
                                       "each [2]."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Q(w) = E[1/p(c|Y)] against guidance strength w on a 3-class Gaussian mixture in 2-D.

    Li & Jiao (arXiv 2505.01382): guidance lowers Q although some samples' p(c|Y) goes down.
    Runs the built-in spec li-jiao-gmm (`guidelab spec show li-jiao-gmm`) with these options
    as overrides; writes OUT/units/*.parquet, OUT/results.csv, OUT/q_vs_w.png and
    OUT/report.html.
    """
    from .report.plots import plot_q_vs_w
    from .studies.li_jiao_gmm import li_jiao_spec

    with _errors(debug, out):
        strengths = _parse_list(w, float, "--w")
        class_list = _parse_list(classes, int, "--classes")
        spec = li_jiao_spec(trials=trials, steps=steps, sampler=sampler, schedule=schedule,
                            device=device, seed=seed, strengths=strengths, classes=class_list,
                            allow_negative=allow_negative or None,
                            reference_steps=reference_steps,
                            dtype="float64" if float64 else None)
        title = (f"li-jiao-gmm: {spec.distribution_object()}, sampler {spec.sampler.name} "
                 f"({spec.sampler.schedule}, T = {spec.sampler.steps}), {spec.trials} trials "
                 f"per class and w, device {spec.device}, seed {spec.seed}")
        result = _run_study(spec, out, backend=backend, address=address, quiet=quiet,
                            report=True, debug=debug, title=title, workers=workers)
        figure = plot_q_vs_w(result.rows, out / "q_vs_w.png",
                             title=f"Li-Jiao GMM experiment: {spec.sampler.name}, "
                                   f"T = {spec.sampler.steps}, {spec.trials} trials")
        typer.echo(f"  figure: {figure}")
        typer.echo(f"  profile (where in noise level guidance lowers Q, w = 1): "
                   f"{_write_profile(spec, out, 1.0)}")


# --- li-jiao-digits (learned models) ---

_DIGITS_HEADER = (f"{'model':<8} {'guidance':<10} {'w':>5} {'n':>5} {'Q':>9} {'interval':>19} "
                  f"{'k-hat':>6} {'E[p]':>7} {'p 1%':>7} {'acc':>6} {'p down':>7}")


def _digits_row(row: dict) -> str:
    """One pooled row of li-jiao-digits / learned-vs-exact as a table line."""
    def number(value, spec):
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        return format(value, spec)

    w = "-" if row.get("w") is None else f"{row['w']:g}"
    flag = "" if row.get("q_reliable") else "  !"
    return (f"{row['model']:<8} {row.get('guidance', 'cfg'):<10} {w:>5} {row['n']:>5} "
            f"{number(row['q_mean'], '.4f'):>9} [{number(row['q_low'], '.4f'):>8}, "
            f"{number(row['q_high'], '.4f'):>8}] {number(row['pareto_khat'], '.2f'):>6} "
            f"{number(row['p_mean'], '.4f'):>7} {number(row.get('p_q01'), '.4f'):>7} "
            f"{number(row['accuracy'], '.3f'):>6} {number(row.get('frac_p_decreased'), '.3f'):>7}"
            f"{flag}")


@reproduce.command("li-jiao-digits")
def li_jiao_digits(
    out: Path = typer.Option(Path("results/li-jiao-digits"), "--out",
                             help="Folder for results.csv, calibration.json, q_vs_w.png, "
                                  "samples.png and reliability.png."),
    trials: int | None = typer.Option(None, "--trials",
                                      help="Samples per class and strength (default 100)."),
    w: str | None = typer.Option(None, "--w", help="Comma-separated strengths w (0 is always "
                                 "added) (default 0,0.5,1,2,4)."),
    steps: int | None = typer.Option(None, "--steps", help="Sampler steps T (default 50)."),
    sampler: str | None = typer.Option(None, "--sampler",
                                       help="ddpm_type, ddpm_ancestral, ddim, ode_euler or "
                                            "ode_heun (default ddpm_type)."),
    schedule: str | None = typer.Option(None, "--schedule",
                                        help="li_jiao, linear or cosine (default li_jiao)."),
    guidance: str = typer.Option("cfg,classifier", "--guidance",
                                 help="Rules for the trained network: cfg, classifier."),
    models: str = typer.Option("network,kernel", "--models", help="network, kernel."),
    kernel_guidance: str = typer.Option("cfg", "--kernel-guidance",
                                        help="Rules for the exact kernel model (its classifier "
                                             "guidance equals its CFG; slower)."),
    bandwidth: float | None = typer.Option(None, "--bandwidth",
                                           help="Bandwidth h of the kernel model (default 0.3)."),
    network: str | None = typer.Option(None, "--network",
                                       help="mlp (64 pixels) or conv (8x8 images), default "
                                            "mlp."),
    denoiser_steps: int | None = typer.Option(None, "--denoiser-steps",
                                              help="Training steps of the denoiser, default "
                                                   "3000."),
    classifier_steps: int | None = typer.Option(None, "--classifier-steps",
                                                help="Training steps of the noisy classifier "
                                                     "(default 1000)."),
    seed: int | None = typer.Option(None, "--seed",
                                    help="Seed of training and of all sampling noise, "
                                         "default 0."),
    split_seed: int | None = typer.Option(None, "--split-seed",
                                          help="Seed of the stratified split (default 0)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir",
                                          help="Trained-network cache [$GUIDELAB_CACHE/models, "
                                               "else ~/.cache/guidelab/models]."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Train afresh; write no cache."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Li & Jiao's second experiment on scikit-learn's digits, judged by an independent
    classifier.

    A diffusion model (and a noisy classifier) trained on one part of the digits is guided
    (CFG, classifier guidance) over w; an exact kernel density of the same digits is guided the
    same way; a calibrated logistic regression trained on another part judges every sample.
    Prints pooled Q(w) = E[1/p_eval(c|Y)] over classes; writes per-class and pooled rows to
    OUT/results.csv, the judge's calibration to OUT/calibration.json, and q_vs_w.png,
    samples.png and reliability.png.
    """
    import time

    from .report.digits import write_digits_report
    from .studies.li_jiao_digits import DigitsConfig, run_li_jiao_digits

    with _errors(debug, out):
        strengths = _parse_list(w, float, "--w") or [0.0, 0.5, 1.0, 2.0, 4.0]
        if 0.0 not in strengths:
            strengths = [0.0, *strengths]
        overrides = {"trials": trials, "steps": steps, "sampler": sampler,
                     "schedule": schedule, "bandwidth": bandwidth, "network": network,
                     "denoiser_steps": denoiser_steps, "classifier_steps": classifier_steps,
                     "seed": seed, "split_seed": split_seed}
        config = DigitsConfig(
            strengths=tuple(strengths),
            guidance=tuple(g.strip() for g in guidance.split(",")),
            models=tuple(m.strip() for m in models.split(",")),
            kernel_guidance=tuple(g.strip() for g in kernel_guidance.split(",")),
            cache_dir=cache_dir, use_cache=not no_cache, device=device,
            **{key: value for key, value in overrides.items() if value is not None})
        config.validate()
        typer.echo(f"li-jiao-digits: {config.sampler} ({config.schedule}, T = {config.steps}), "
                   f"{config.trials} trials per class and w, w = {list(config.strengths)}, "
                   f"device {config.device}, seed {config.seed}")
        typer.echo("pixels v/8 - 1 in [-1, 1]; split A/B/C = 1/2, 1/4, 1/4 (stratified): A "
                   "trains the models, B the judge, C is held out (calibration, real rows)")
        start = time.perf_counter()
        result = run_li_jiao_digits(config, out_dir=out, progress=not quiet,
                                    log=lambda message: typer.echo(f"  {message}"))
        typer.echo("pooled over classes (per-class rows in results.csv); '!' marks a mean the "
                   "tail diagnosis calls unreliable (k-hat above threshold)")
        typer.echo(_DIGITS_HEADER)
        for row in result.rows:
            if row["class"] == "all":
                typer.echo(_digits_row(row))
        paths = write_digits_report(result, out)
        typer.echo(f"wrote {out / 'results.csv'}, {out / 'calibration.json'}, "
                   f"{', '.join(str(p) for p in paths.values())} in "
                   f"{time.perf_counter() - start:.1f} s")


@reproduce.command("learned-vs-exact")
def learned_vs_exact(
    out: Path = typer.Option(Path("results/learned-vs-exact"), "--out",
                             help="Folder for results.csv and support.csv."),
    trials: int = typer.Option(2000, "--trials", help="Samples per class and w (mixture)."),
    steps: int = typer.Option(200, "--steps", help="Sampler steps T."),
    train_steps: int = typer.Option(3000, "--train-steps", help="Training steps."),
    support_trials: int = typer.Option(2000, "--support-trials",
                                       help="Samples per class and w (uniform boxes)."),
    eps: str = typer.Option("0,0.05,0.1", "--eps", help="Score errors of the box experiment."),
    kinds: str = typer.Option("bias,noise", "--kinds", help="Perturbed kinds: bias, noise."),
    seed: int = typer.Option(0, "--seed", help="Seed of training and sampling noise."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Trained-network cache."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, ..."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """A trained network beside the exact 2-D mixture of li-jiao-gmm (score error, Q(w) judged
    by the exact posterior), and the mass outside a uniform box's support against w for exact
    and perturbed scores (Chidambaram et al., arXiv 2409.13074)."""
    from .studies.learned_vs_exact import (
        LearnedVsExactConfig,
        run_learned_vs_exact,
        run_support_leak,
    )

    with _errors(debug, out):
        config = LearnedVsExactConfig(trials=trials, steps=steps, train_steps=train_steps,
                                      seed=seed, cache_dir=cache_dir, device=device)
        result = run_learned_vs_exact(config, out_dir=out, progress=not quiet)
        typer.echo(f"score error of the trained MLPDenoiser against the exact score "
                   f"(relative, sigma^2-weighted over noise levels): conditional "
                   f"{result.score_error.total:.4f}, unconditional "
                   f"{result.score_error.total_unconditional:.4f}")
        typer.echo(result.score_error.table())
        typer.echo("Q(w) judged by the exact posterior, pooled over classes (per class in "
                   "results.csv)")
        typer.echo(_DIGITS_HEADER)
        for row in result.rows:
            if row["class"] == "all":
                typer.echo(_digits_row({**row, "guidance": "cfg"}))
        rows = run_support_leak(eps=_parse_list(eps, float, "--eps"),
                                kinds=tuple(k.strip() for k in kinds.split(",")),
                                trials=support_trials, seed=seed, device=device, out_dir=out,
                                progress=not quiet)
        typer.echo("mass outside the class support (two adjacent boxes in 1-D), 95% "
                   "Clopper-Pearson interval")
        typer.echo(f"{'kind':<6} {'eps':>5} {'w':>4} {'outside':>8} {'interval':>19} "
                   f"{'mean dist':>9}")
        for row in rows:
            typer.echo(f"{row['kind']:<6} {row['eps']:>5g} {row['w']:>4g} "
                       f"{row['outside']:>8.4f} [{row['outside_low']:.4f}, "
                       f"{row['outside_high']:.4f}] {row['mean_distance_outside']:>9.4f}")
        typer.echo(f"wrote {out / 'results.csv'} and {out / 'support.csv'}")


# --- li-jiao-1d and the guidance-effect profile (exact references) ---

def _write_profile(spec, out: Path, w: float) -> Path:
    """Where in noise level guidance of strength w lowers Q, one curve per class: OUT/profile.png.

    The integrand of the decrease formula Q(w) = E[1/p_T(c|Y_T)] - 2w int E[|grad log p_t(c|Y)|^2
    / p_t(c|Y)] dt along the continuous-time guided reverse SDE (exact scores), propagated on a
    grid in 1-D and estimated along 4096 paths (500 steps) in 2-D.
    """
    from .exact import decrease_profile
    from .report.profile import plot_profile

    distribution = spec.distribution_object()
    one_d = distribution.dim == 1
    profiles = [decrease_profile(distribution, c, w, method="grid" if one_d else "paths",
                                 num_steps=1000 if one_d else 500, n=4096, seed=spec.seed)
                for c in spec.classes]
    return plot_profile(profiles, out / "profile.png")


@reproduce.command("li-jiao-1d")
def li_jiao_1d(
    out: Path = typer.Option(Path("results/li-jiao-1d"), "--out",
                             help="Results folder: units/*.parquet, results.csv, q_vs_w.png, "
                                  "profile.png, report.html."),
    trials: int | None = typer.Option(None, "--trials",
                                      help="Samples per class and strength (default 20000)."),
    steps: int | None = typer.Option(None, "--steps", help="Sampler steps T (default 1000)."),
    sampler: str | None = typer.Option(None, "--sampler", help="A registered sampler "
                                       "(default ddpm_type)."),
    schedule: str | None = typer.Option(None, "--schedule", help="li_jiao, linear or cosine "
                                        "(default linear)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of all noise (default 0)."),
    w: str | None = typer.Option(None, "--w", help="Comma-separated strengths w (0 is always "
                                 "added; default 0, 0.5, 2)."),
    profile_w: float = typer.Option(1.0, "--profile-w", help="Strength of the guidance-effect "
                                    "profile (profile.png)."),
    backend: str = typer.Option("local", "--backend", help="local or ray."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Heavy-tailed 1-D mixture: Monte Carlo Q(w) beside the exact grid reference.

    Class 0 = N(-1, 0.5^2), class 1 = {N(1, 0.3^2), N(3, 0.3^2)}, p(c) = 1/2: 1/p(c|Y) is so
    heavy-tailed that Monte Carlo means sit far below the truth; the grid_q column propagates
    each sampler's output density on a grid (no Monte Carlo error). Runs the built-in spec
    li-jiao-1d (`guidelab spec show li-jiao-1d`) with these options as overrides and writes
    OUT/profile.png, where in noise level guidance lowers Q.
    """
    from .report.plots import plot_q_vs_w
    from .studies.li_jiao_gmm import li_jiao_spec

    with _errors(debug, out):
        strengths = _parse_list(w, float, "--w")
        spec = li_jiao_spec("li-jiao-1d", trials=trials, steps=steps, sampler=sampler,
                            schedule=schedule, seed=seed, strengths=strengths)
        title = (f"li-jiao-1d: {spec.distribution_object()}, sampler {spec.sampler.name} "
                 f"({spec.sampler.schedule}, T = {spec.sampler.steps}), {spec.trials} trials "
                 f"per class and w, seed {spec.seed}; grid_q is exact for the sampler")
        result = _run_study(spec, out, backend=backend, address=None, quiet=quiet,
                            report=True, debug=debug, title=title)
        figure = plot_q_vs_w(result.rows, out / "q_vs_w.png",
                             title=f"li-jiao-1d: {spec.sampler.name}, T = {spec.sampler.steps}")
        typer.echo(f"  figure: {figure}")
        typer.echo(f"  profile (where in noise level guidance lowers Q, w = {profile_w:g}): "
                   f"{_write_profile(spec, out, profile_w)}")
