"""Triton serving: generated model configuration, a model repository, and a local server runner."""
