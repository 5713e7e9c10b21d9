"""Experiments: configured runs that write results a run at a time (see ``results``)."""

from .li_jiao_gmm import LiJiaoConfig, default_mixture, default_strengths, run_li_jiao_gmm
from .results import atomic_write_bytes, write_csv

__all__ = ["LiJiaoConfig", "default_mixture", "default_strengths", "run_li_jiao_gmm",
           "atomic_write_bytes", "write_csv"]
