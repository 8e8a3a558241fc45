"""Built-in pipelines (no downloaded weights); `pipelines.registry.BUILTIN_MODULES` names their modules."""
