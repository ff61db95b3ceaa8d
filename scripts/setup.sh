#!/usr/bin/env bash
# One install for everything: the CLI, Pulumi SDK and providers, pyinfra, Ansible, testinfra, test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "gpufleet needs Python 3.11+" >&2; exit 2; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "gpufleet installed in .venv ($(.venv/bin/gpufleet --help >/dev/null && echo ok))"
