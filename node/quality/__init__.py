"""Quality monitoring: is the AI right on this hospital's own images?

``observe`` keeps what each job's run reported (measurements, findings, acquisition attributes, refusals);
``recognise`` tells a foreign SEG that references a processed series from an image series; ``online`` scores
such references against the series' jobs; ``drift`` compares recent runs with a baseline; ``export`` writes
cases with references as a de-identified training set. The metrics themselves live in ``pipelines.evaluation``.
"""
