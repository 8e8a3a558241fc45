"""Assemble: when a series (and its study) is complete, from the evidence of its associations or a quiet period."""
