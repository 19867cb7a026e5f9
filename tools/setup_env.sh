# Sourced by tools/main.sh and tools/test.sh: makes .venv with the project
# installed (editable, CPU TensorFlow, test tools), reinstalling only when
# pyproject.toml changes. Set PYTHON to choose the interpreter (default python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=".venv/.resnet-v2-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[cpu,test]'
  rm -f .venv/.resnet-v2-* && touch "$stamp"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
