"""Carry plans out: node deploys through the pyinfra API, cluster roles through ansible-runner."""
