"""Report: the figures and tables of a study and its self-contained HTML page, drawn from the
results store alone (``html``: the page; ``plots``: Q(w), Q per setting, the mass outside the
support; ``profile``: the guidance-effect profile; ``figures``: sample grids and reliability
diagrams; ``scatter``: samples over densities; ``tables``; ``glossary``)."""

from .html import write_report
from .plots import plot_q_vs_w, q_vs_w_figure

__all__ = ["plot_q_vs_w", "q_vs_w_figure", "write_report"]
