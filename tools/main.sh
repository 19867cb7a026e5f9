#!/usr/bin/env bash
# The main job on its embedded default, after setting up .venv if needed.
source "$(dirname "$0")/setup_env.sh"
exec .venv/bin/python -m experiments.digits "$@"
