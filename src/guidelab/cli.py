"""The ``guidelab`` command line.

    guidelab reproduce li-jiao-gmm [--out DIR] [--trials N] [--steps T] [--sampler NAME]
                                   [--device DEV] [--seed S] ...

Guidance strengths are Ho & Salimans' w (w = 0 unguided; the "CFG scale" is 1 + w).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import typer

__all__ = ["app"]

app = typer.Typer(help="Exact measurements of what guidance does to diffusion samples.",
                  no_args_is_help=True, add_completion=False)
reproduce = typer.Typer(help="Reproduce the experiments of the papers guidelab checks.",
                        no_args_is_help=True)
app.add_typer(reproduce, name="reproduce")


@app.callback()
def _main() -> None:
    """guidelab: exact scores, class posteriors and guided-sampler measurements."""


def _format_row(row: dict) -> str:
    high = f"{row['q_high']:.4f}" if math.isfinite(row["q_high"]) else "inf"
    decreased = row.get("frac_p_decreased")
    decreased = "" if decreased is None else f"{decreased:.4f}"
    flag = "" if row.get("q_reliable") else "  !"
    return (f"{row['sampler']:<15} {row['class']:>5} {row['w']:>8.4g} {row['n']:>6} "
            f"{row['q_mean']:>9.4f} [{row['q_low']:>7.4f}, {high:>7}] "
            f"{row['pareto_khat']:>6.2f} {row['q_top_share']:>7.4f} {row['p_mean']:>7.4f} "
            f"{row['accuracy']:>7.4f} {decreased:>8} {row['inv_prior']:>8.4f}{flag}")


HEADER = (f"{'sampler':<15} {'class':>5} {'w':>8} {'n':>6} {'Q':>9} {'interval':>18} "
          f"{'k-hat':>6} {'top0.1%':>7} {'E[p]':>7} {'acc':>7} {'p down':>8} {'1/p(c)':>8}")


def _parse_strengths(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}",
                                 param_hint="--w") from None
    if 0.0 not in values:
        values = [0.0] + values
    return values


@reproduce.command("li-jiao-gmm")
def li_jiao_gmm(
    out: Path = typer.Option(Path("results/li-jiao-gmm"), "--out",
                             help="Folder for results.csv and q_vs_w.png."),
    trials: int = typer.Option(10_000, "--trials", help="Samples per class and strength."),
    steps: int = typer.Option(1000, "--steps", help="Sampler steps T."),
    sampler: str = typer.Option("ddpm_type", "--sampler",
                                help="ddpm_type, ddpm_ancestral, ddim, ode_euler, ode_heun or "
                                     "euler_maruyama."),
    schedule: str = typer.Option("li_jiao", "--schedule", help="li_jiao, linear or cosine."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    seed: int = typer.Option(0, "--seed", help="Seed of all noise; every w shares it."),
    w: str | None = typer.Option(None, "--w", help="Comma-separated strengths w (0 is always "
                                 "added). Default: 0 and 10 log-spaced values in [0.01, 10]."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated classes."),
    allow_negative: bool = typer.Option(False, "--allow-negative",
                                        help="Accept w < 0 (guidance away from the class)."),
    reference_steps: int = typer.Option(50, "--reference-steps",
                                        help="Steps of the exact reverse kernel (w = 0)."),
    float64: bool = typer.Option(False, "--float64", help="Sample in float64."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Q(w) = E[1/p(c|Y)] against guidance strength w on a 3-class Gaussian mixture in 2-D.

    Li & Jiao (arXiv 2505.01382): guidance lowers Q although some samples' p(c|Y) goes down.
    Writes OUT/results.csv (one row per class and w, rewritten after each w) and
    OUT/q_vs_w.png.
    """
    import torch

    from .experiments import LiJiaoConfig, run_li_jiao_gmm
    from .experiments.li_jiao_gmm import RESULT_COLUMNS, default_mixture, default_strengths
    from .report.plots import plot_q_vs_w

    try:
        class_list = None if classes is None else [int(c) for c in classes.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {classes!r}",
                                 param_hint="--classes") from None
    config = LiJiaoConfig(trials=trials, steps=steps, sampler=sampler, schedule=schedule,
                          strengths=_parse_strengths(w) or default_strengths(),
                          classes=class_list, allow_negative=allow_negative,
                          reference_steps=reference_steps, seed=seed, device=device,
                          dtype=torch.float64 if float64 else torch.float32)
    mixture = default_mixture()
    try:
        config.validate(mixture)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"li-jiao-gmm: {mixture}, sampler {sampler} ({schedule}, T = {steps}), "
               f"{trials} trials per class and w, device {device}, seed {seed}")
    typer.echo("w is Ho & Salimans' guidance strength (w = 0 unguided, CFG scale = 1 + w); "
               "interval: see interval_method in results.csv; '!' marks an unreliable mean")
    typer.echo(HEADER)
    start = time.perf_counter()
    rows = run_li_jiao_gmm(config, mixture=mixture, out_dir=out, progress=not quiet,
                           on_row=lambda row: typer.echo(_format_row(row)))
    figure = plot_q_vs_w(rows, out / "q_vs_w.png",
                         title=f"Li-Jiao GMM experiment: {sampler}, T = {steps}, "
                               f"{trials} trials")
    warnings = sorted({(row["class"], row["w"], text) for row in rows
                       for text in row.get("warnings", "").split(" | ") if text})
    for c, strength, text in warnings:
        typer.echo(f"warning (class {c}, w = {strength:g}): {text}")
    nonfinite = sum(row["n_nonfinite"] for row in rows)
    if nonfinite:
        typer.echo(f"warning: {nonfinite} samples were non-finite; they were counted in "
                   f"n_nonfinite and left out of every average")
    typer.echo(f"wrote {out / 'results.csv'} ({len(rows)} rows, columns "
               f"{', '.join(RESULT_COLUMNS[:11])}, ...) and {figure} "
               f"in {time.perf_counter() - start:.1f} s")

