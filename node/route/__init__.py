"""Route: which pipelines and destinations a complete series triggers, by rules over its attributes and AE titles."""
