"""Runs an experiment script as a user would: `python -m ...` in a subprocess."""

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1',
              PYTHONPATH=ROOT)


def run(module, *flags, timeout=600, check=True, cwd=ROOT):
  """Runs `python -m module flags...`; returns the CompletedProcess (output merged)."""
  result = subprocess.run([sys.executable, '-m', module, *flags], cwd=cwd,
                          env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'{module} exited with {result.returncode}:\n'
                         f'{result.stdout[-5000:]}')
  return result


def start(module, *flags):
  """Starts `python -m module flags...`; returns the Popen (output merged)."""
  return subprocess.Popen([sys.executable, '-m', module, *flags], cwd=ROOT,
                          env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def wait_for(process, pattern, timeout=180):
  """Reads a started process's output until a line matches; returns the lines read."""
  lines, deadline = [], time.time() + timeout
  for line in process.stdout:
    lines.append(line)
    if re.search(pattern, line):
      return lines
    assert time.time() < deadline, ''.join(lines[-50:])
  raise AssertionError(f'{pattern!r} never appeared:\n' + ''.join(lines[-50:]))
