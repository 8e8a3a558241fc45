"""Built-in pipelines (no downloaded weights); importing this package registers them."""

from pipelines.builtin import ct_lungs, ct_tissue  # noqa: F401
