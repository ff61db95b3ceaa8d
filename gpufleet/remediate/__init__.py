"""Remediation: a GPU fault seen in service takes the node out; the admission gate brings it back."""
