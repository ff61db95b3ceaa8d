"""Facts: one command each, parsed by a pure `process()`, tested from recorded outputs."""
