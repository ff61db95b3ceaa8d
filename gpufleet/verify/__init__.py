"""Host verification: run the testinfra suite (tests/host) against a site; the admission gate."""

from gpufleet.verify.runner import CheckResult, VerifyReport, verify_site

__all__ = ["CheckResult", "VerifyReport", "verify_site"]
