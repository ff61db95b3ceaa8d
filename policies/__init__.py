"""The gpufleet policy pack: rules in `policies.rules`; `__main__.py` serves them to the engine."""
