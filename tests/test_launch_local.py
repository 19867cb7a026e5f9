"""Tests of launch.local, run as a user runs it, with small Python workers.

The workers are plain Python scripts (no TensorFlow) written into tmp_path.
Each records its pid there, so that anything a broken launcher leaves behind
is killed after the test.
"""

import json
import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from launch import local

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Seconds. Every test takes a few, but a busy machine can start Python slowly:
# this only bounds a hang. Workers meant to be stopped sleep for longer, so a
# launcher that waited for them would time out.
TIMEOUT = 300

# Every worker script starts with this: its TF_CONFIG, index and port, and
# OUT, the test's tmp_path, where it leaves files for the test to check.
PREAMBLE = '''\
import json, os, pathlib, signal, socket, sys, time
CONFIG = json.loads(os.environ['TF_CONFIG'])
INDEX = CONFIG['task']['index']
PORT = int(CONFIG['cluster']['worker'][INDEX].rsplit(':', 1)[1])
OUT = pathlib.Path(sys.argv[1])
(OUT / f'pid.{os.getpid()}').write_text(str(INDEX))


def wait_for(name, seconds=300):
  deadline = time.monotonic() + seconds
  while not (OUT / name).exists():
    if time.monotonic() > deadline:
      sys.exit(f'worker {INDEX}: no {name} after {seconds}s')
    time.sleep(0.02)
'''


def _running(pid):
  try:
    stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
  except FileNotFoundError:
    return False
  return stat.rsplit(')', 1)[1].split()[0] != 'Z'


@pytest.fixture
def out(tmp_path):
  """tmp_path; afterwards, kills any worker still running (by its pid)."""
  yield tmp_path
  for pid_file in tmp_path.glob('pid.*'):
    pid = int(pid_file.name.split('.')[1])
    cmdline = pathlib.Path(f'/proc/{pid}/cmdline')
    if _running(pid) and str(tmp_path) in cmdline.read_text(errors='replace'):
      os.kill(pid, signal.SIGKILL)


def worker(out, body):
  """Writes a worker script; returns the command that runs it."""
  script = out / 'worker.py'
  script.write_text(PREAMBLE + textwrap.dedent(body))
  return [sys.executable, str(script), str(out)]


def _env():
  env = dict(os.environ)
  for name in ('TF_CONFIG', 'PYTHONUNBUFFERED'):
    env.pop(name, None)
  return env


def launcher_command(flags, command):
  return [sys.executable, '-m', 'launch.local', *flags, '--', *command]


def run_launcher(flags, command):
  return subprocess.run(launcher_command(flags, command), cwd=ROOT,
                        env=_env(), capture_output=True, text=True,
                        timeout=TIMEOUT, check=False)


def start_launcher(flags, command):
  return subprocess.Popen(launcher_command(flags, command), cwd=ROOT,
                          env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def wait_for_files(out, names):
  deadline = time.monotonic() + TIMEOUT
  while not all((out / name).exists() for name in names):
    assert time.monotonic() < deadline, f'no {names} in {out}'
    time.sleep(0.02)


def worker_pids(out):
  return {int(f.name.split('.')[1]): int(f.read_text())
          for f in out.glob('pid.*')}


def test_tf_config_names_the_cluster_and_the_task():
  config = json.loads(local.tf_config([4001, 4002], 1))
  assert config == {
      'cluster': {'worker': ['127.0.0.1:4001', '127.0.0.1:4002']},
      'task': {'type': 'worker', 'index': 1}}
  with pytest.raises(ValueError, match='outside the cluster of 2 workers'):
    local.tf_config([4001, 4002], 2)


def test_free_ports_are_distinct_and_can_be_bound():
  ports = local.free_ports(8)
  assert len(set(ports)) == 8
  for port in ports:
    with socket.socket() as sock:
      sock.bind(('127.0.0.1', port))


def test_each_worker_gets_its_index_in_one_cluster_of_free_ports(out):
  command = worker(out, '''
      with socket.socket() as sock:  # As TF's server will: fails if taken.
        sock.bind(('127.0.0.1', PORT))
        sock.listen()
        print(json.dumps(CONFIG))
      ''')
  result = run_launcher(['--workers=3'], command)
  assert result.returncode == 0, result.stderr
  configs = {}
  for line in result.stdout.splitlines():
    prefix, text = line.split('] ', 1)
    configs[int(prefix[len('[worker '):])] = json.loads(text)
  assert sorted(configs) == [0, 1, 2]
  cluster = configs[0]['cluster']
  assert list(cluster) == ['worker']  # No 'chief' job: worker 0 is chief.
  hosts, ports = zip(*(a.split(':') for a in cluster['worker']))
  assert hosts == ('127.0.0.1',) * 3 and len(set(ports)) == 3
  for index, config in configs.items():
    assert config == {'cluster': cluster,
                      'task': {'type': 'worker', 'index': index}}
  assert 'launch: all workers finished' in result.stderr


def test_lines_are_prefixed_whole_on_their_own_stream(out):
  command = worker(out, '''
      for k in range(20):  # Long lines, written (and piped) in pieces.
        for _ in range(10):
          sys.stdout.write(str(INDEX) * 500)
          sys.stdout.flush()
        sys.stdout.write('\\n')
        print(f'err {INDEX}.{k}', file=sys.stderr)
      sys.stdout.write('no newline at the end')
      ''')
  result = run_launcher(['--workers=3'], command)
  assert result.returncode == 0, result.stderr
  expected = sorted(f'[worker {i}] ' + str(i) * 5000
                    for i in range(3) for _ in range(20))
  expected += [f'[worker {i}] no newline at the end' for i in range(3)]
  assert sorted(result.stdout.splitlines()) == sorted(expected)
  errors = [line for line in result.stderr.splitlines()
            if not line.startswith('launch: ')]
  assert sorted(errors) == sorted(f'[worker {i}] err {i}.{k}'
                                  for i in range(3) for k in range(20))


def test_output_is_streamed_while_workers_run(out):
  # Plain print(): the launcher makes Python workers unbuffered.
  command = worker(out, '''
      print('waiting for go')
      wait_for('go')
      ''')
  launcher = start_launcher(['--workers=1'], command)
  lines = queue.Queue()
  threading.Thread(target=lambda: [lines.put(l) for l in launcher.stdout],
                   daemon=True).start()
  try:
    assert lines.get(timeout=TIMEOUT) == '[worker 0] waiting for go\n'
    (out / 'go').touch()
    assert launcher.wait(TIMEOUT) == 0
  finally:
    launcher.kill()


def test_first_failure_sets_the_exit_code_and_stops_the_others(out):
  command = worker(out, '''
      def on_sigterm(signum, frame):
        (OUT / f'sigterm.{INDEX}').touch()
        if INDEX == 2:
          sys.exit(5)  # A later failure, which must not set the exit code.
      signal.signal(signal.SIGTERM, on_sigterm)  # Worker 0 ignores it.
      (OUT / f'ready.{INDEX}').touch()
      if INDEX == 1:
        wait_for('ready.0')
        wait_for('ready.2')
        sys.exit(3)
      time.sleep(2 * TIMEOUT)
      '''.replace('TIMEOUT', str(TIMEOUT)))
  result = run_launcher(['--workers=3', '--grace_period=1'], command)
  assert result.returncode == 3, result.stderr
  assert (out / 'sigterm.0').exists() and (out / 'sigterm.2').exists()
  pids = worker_pids(out)
  assert sorted(pids.values()) == [0, 1, 2]
  assert not any(_running(pid) for pid in pids)  # Worker 0 got SIGKILL.
  assert 'launch: worker 1 died (exit code 3); stopping' in result.stderr
  assert 'worker 2 died' not in result.stderr


@pytest.mark.parametrize('signum',
                         [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_are_forwarded_to_every_worker_and_never_restart(out, signum):
  command = worker(out, '''
      def on_signal(signum, frame):
        (OUT / f'got.{INDEX}').write_text(signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # Dies by it: a non-zero exit.
      for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
      (OUT / f'ready.{INDEX}').touch()
      time.sleep(30)
      ''')
  launcher = start_launcher(['--workers=3', '--max_restarts=2'], command)
  try:
    wait_for_files(out, [f'ready.{i}' for i in range(3)])
    launcher.send_signal(signum)
    _, stderr = launcher.communicate(timeout=TIMEOUT)
  finally:
    launcher.kill()
  assert launcher.returncode == 128 + signum, stderr
  for i in range(3):
    assert (out / f'got.{i}').read_text() == signum.name
  assert len(worker_pids(out)) == 3, 'the group was restarted'
  assert 'restarting' not in stderr
  assert f'launch: stopped by {signum.name}' in stderr


def test_max_restarts_restarts_the_group_after_a_worker_is_killed(out):
  command = worker(out, '''
      with open(OUT / 'configs', 'a') as f:
        f.write(json.dumps(CONFIG) + '\\n')
      if INDEX == 1 and not (OUT / 'killed').exists():
        (OUT / 'killed').touch()
        os.kill(os.getpid(), signal.SIGKILL)
      time.sleep(0.5)
      ''')
  result = run_launcher(['--workers=2', '--max_restarts=1'], command)
  assert result.returncode == 0, result.stderr
  assert ('launch: worker 1 died (signal SIGKILL); restarting the group (1/1)'
          in result.stderr.splitlines())
  assert result.stderr.count('launch: starting 2 workers') == 2
  configs = [json.loads(line)
             for line in (out / 'configs').read_text().splitlines()]
  second = [c for c in configs if c['task']['index'] == 1][-1]
  assert len(set(second['cluster']['worker'])) == 2
  assert 'launch: all workers finished' in result.stderr


def test_restarts_run_out_and_the_failure_is_the_exit_code(out):
  command = worker(out, '''
      if INDEX == 1:
        os.kill(os.getpid(), signal.SIGKILL)
      time.sleep(0.5)
      ''')
  result = run_launcher(['--workers=2', '--max_restarts=2'], command)
  assert result.returncode == 128 + signal.SIGKILL, result.stderr
  lines = result.stderr.splitlines()
  for attempt in ('(1/2)', '(2/2)'):
    assert ('launch: worker 1 died (signal SIGKILL); restarting the group '
            + attempt) in lines
  assert ('launch: worker 1 died (signal SIGKILL) after 2 restarts; exiting '
          'with 137') in lines
  assert sorted(worker_pids(out).values()).count(1) == 3


def test_startup_timeout_fails_a_worker_that_never_listens(out):
  command = worker(out, '''
      with socket.socket() as sock:
        if INDEX == 0:
          sock.bind(('127.0.0.1', PORT))
          sock.listen()
        time.sleep(2 * TIMEOUT)
      '''.replace('TIMEOUT', str(TIMEOUT)))
  # Long enough for worker 0 to start listening on a busy machine.
  result = run_launcher(['--workers=2', '--startup_timeout=10',
                         '--grace_period=1'], command)
  assert result.returncode == 1, result.stderr
  assert 'launch: worker 1 failed (not listening on 127.0.0.1:' in result.stderr
  assert 'worker 0 failed' not in result.stderr


@pytest.mark.parametrize('flags, command, message', [
    (['--workers=2'], [], 'no command to run; give it after --'),
    (['--workers=2'], ['no-such-command-here'], 'command not found'),
    (['--workers=0'], ['true'], 'flag --workers=0: 0 is not a positive'),
    ([], ['true'], 'flag --workers=None'),
])
def test_bad_command_lines_are_refused_with_a_reason(flags, command, message):
  result = run_launcher(flags, command)
  assert result.returncode != 0
  assert message in result.stderr
  assert 'starting' not in result.stderr
