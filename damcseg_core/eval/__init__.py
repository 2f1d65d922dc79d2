"""Evaluation: the DAMCSeg metrics (Sec. IV.A.2), robustness protocols, the evaluator and reports.

Import the pieces from their modules, e.g. ``from damcseg_core.eval.metrics import MetricSuite``;
this package imports nothing heavy by itself.
"""
