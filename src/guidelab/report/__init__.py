"""Report: plots and tables of experiment results, and a study's self-contained HTML page."""

from .html import write_report
from .plots import plot_q_vs_w, q_vs_w_figure

__all__ = ["plot_q_vs_w", "q_vs_w_figure", "write_report"]
