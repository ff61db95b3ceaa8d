"""Fixtures the burst controller's integration tests share: moto's AWS server and a group in it
(`moto_url`, `asg`), the Kubernetes API double (`kube`), and a Pulumi project with its state
directory for the fake pulumi CLI (`project`, `pulumi_root`). Defined beside the tests that
introduced them; registered here once for every test module in this directory."""

from tests.integration.test_burst_aws import asg, kube, moto_url
from tests.integration.test_burst_pulumi import project, pulumi_root

__all__ = ["asg", "kube", "moto_url", "project", "pulumi_root"]
