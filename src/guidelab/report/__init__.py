"""Report: plots and tables of experiment results."""

from .plots import plot_q_vs_w

__all__ = ["plot_q_vs_w"]
