"""Runs an experiment script as a user would: `python -m ...` in a subprocess.

Timeouts here only bound a hang: a busy machine can take minutes to start
TensorFlow, so they are generous, and no test waits on a duration.
"""

import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1',
              PYTHONPATH=ROOT)


def run(module, *flags, timeout=900, check=True, cwd=ROOT):
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


def wait_for(process, pattern, timeout=600):
  """Reads a started process's output until a line matches; returns the lines read.

  A process still silent after `timeout` seconds is killed (its output then
  ends), so that a hang fails the test instead of blocking it.
  """
  lines, timer = [], threading.Timer(timeout, process.kill)
  timer.start()
  try:
    for line in process.stdout:
      lines.append(line)
      if re.search(pattern, line):
        return lines
  finally:
    timer.cancel()
  raise AssertionError(f'{pattern!r} never appeared (the process exited, or was '
                       f'killed after {timeout}s):\n' + ''.join(lines[-50:]))


def _main_thread_cpu_ticks(pid):
  fields = open(f'/proc/{pid}/task/{pid}/stat').read().rsplit(')', 1)[1].split()
  return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until_blocked(process, quiet=2.0, timeout=600):
  """Waits until the process's main thread has used no CPU for `quiet` seconds.

  A training process's main thread does that only while it waits inside a
  compiled call (tracing the call keeps it busy), which is where a signal
  handler written in Python cannot run.
  """
  deadline = time.monotonic() + timeout
  ticks, since = _main_thread_cpu_ticks(process.pid), time.monotonic()
  while time.monotonic() - since < quiet:
    assert process.poll() is None, 'the process exited'
    assert time.monotonic() < deadline, f'its main thread was busy for {timeout}s'
    time.sleep(0.05)
    now = _main_thread_cpu_ticks(process.pid)
    if now != ticks:
      ticks, since = now, time.monotonic()
