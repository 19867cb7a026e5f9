#!/usr/bin/env bash
# Runs the test suite (what CI runs), after setting up .venv if needed.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k checkpoint`.
source "$(dirname "$0")/setup_env.sh"
exec .venv/bin/python -m pytest "$@"
