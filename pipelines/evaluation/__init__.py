"""Evaluation of a pipeline against references: metrics, reading reference SEGs and classifications, scoring
one series, and the offline evaluation of a set of cases with its report.

``pacsnode evaluate`` uses ``evaluate`` and ``write_report``; the node scores references that arrive with
``read_reference_seg`` and ``score_segments``. Nothing here imports the node.
"""

from pipelines.evaluation.engine import evaluate
from pipelines.evaluation.report import write_report

__all__ = ["evaluate", "write_report"]
