"""The package installs from a fresh clone, through pyproject.toml or setup.py."""

import os
import subprocess
import sys

import pytest

from tests import run_cli


@pytest.mark.slow
def test_a_fresh_clone_installs_and_setup_py_reads_pyproject(tmp_path):
  clone = tmp_path / 'clone'
  subprocess.run(['git', 'clone', '-q', run_cli.ROOT, str(clone)], check=True)
  # Tools that run setup.py get pyproject.toml's metadata through the shim.
  metadata = subprocess.run([sys.executable, 'setup.py', '--name', '--version'],
                            cwd=clone, capture_output=True, text=True, check=True)
  assert metadata.stdout.split()[-2:] == ['resnet-v2', '0.1.0']
  # pip install -e . into a new environment (the dependencies are this one's).
  subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages',
                  str(tmp_path / 'env')], check=True)
  python = str(tmp_path / 'env' / 'bin' / 'python')
  subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-deps', '-e', str(clone)],
                 check=True, capture_output=True)
  where = subprocess.run(
      [python, '-c', 'import importlib.metadata, importlib.util; '
       'print(importlib.metadata.version("resnet-v2")); '
       'print(importlib.util.find_spec("resnet_v2").origin)'],
      cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
  assert where[0] == '0.1.0'
  assert where[1] == os.path.join(str(clone), 'resnet_v2', '__init__.py')
