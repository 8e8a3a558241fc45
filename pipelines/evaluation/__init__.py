"""Evaluation of a pipeline against references: metrics, reading reference SEGs and classifications, scoring
one series, and the offline evaluation of a set of cases with its report.

``pacsnode evaluate`` uses ``engine.evaluate`` and ``report.write_report``; the node scores references that
arrive with ``reference.read_reference_seg`` and ``scoring.score_segments``. Nothing here imports the node,
and this package imports none of its modules itself: ``cases`` (what a SEG is) stays free of torch and MONAI.
"""
