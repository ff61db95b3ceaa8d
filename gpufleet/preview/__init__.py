"""The offline plan: the Pulumi program run under mocks, its graph recorded, rendered for review."""
