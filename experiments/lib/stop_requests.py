"""SIGTERM (preemption) and Ctrl-C, answered at once, during the training loop.

Python runs a signal handler in the main thread only, between two bytecodes.
During a compiled multi-step call the main thread waits inside TensorFlow for
as long as the call lasts (minutes, with a large --steps_per_loop), so a
handler alone answers a Ctrl-C only then, and a second Ctrl-C cannot end the
run either.

CPython's own C-level handler, though, runs at once in whichever thread the
signal lands on, and writes the signal number as one byte to the wakeup fd
(`signal.set_wakeup_fd`). `StopRequests` makes that fd one end of a socket
pair and reads the other end in a watcher thread, which runs while the main
thread is in TensorFlow (TF releases the GIL there). The watcher logs the
first request at once and ends the process at a second Ctrl-C. The Python
handlers stay installed (they do nothing) so that the C-level handler stays
in place and Ctrl-C raises no KeyboardInterrupt.
"""

import os
import signal
import socket
import sys
import threading

from absl import logging

# Ctrl-C a second time: the exit code a shell shows for a process that
# SIGINT ended.
SECOND_CTRL_C_EXIT_CODE = 128 + signal.SIGINT


def _leave_to_the_watcher(signum, frame):
  """The Python-level handler: the watcher thread has answered already."""
  del signum, frame


class StopRequests:
  """Turns SIGTERM and Ctrl-C into a stop at a step boundary, answered at once.

  The first SIGTERM or Ctrl-C is logged at once and remembered in `received`;
  the loop reads it after the compiled call under way, so that every worker
  agrees on the step to save at (see `cluster.Placement.agree`). A second
  Ctrl-C ends the process at once, without saving, with exit code 130. A
  further SIGTERM changes nothing: the save is already coming.

  Make it in the main thread (Python sets handlers only there), and call
  `restore` when the loop ends, whatever way it ends.
  """

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._reader, self._writer = socket.socketpair()
    self._writer.setblocking(False)  # The C-level handler must never block.
    self._watcher = threading.Thread(target=self._watch, daemon=True,
                                     name='stop_requests')
    self._watcher.start()
    # The wakeup fd first: a signal in between still reaches the watcher.
    self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(),
                                             warn_on_full_buffer=False)
    self._previous = {s: signal.signal(s, _leave_to_the_watcher)
                      for s in self._SIGNALS}

  def _watch(self):
    """Answers each signal the C-level handler wrote, until `restore`."""
    while True:
      try:
        signums = self._reader.recv(64)
      except OSError:
        return
      if not signums:  # `restore` closed the other end.
        return
      for signum in signums:
        if signum in self._SIGNALS:
          self._answer(signal.Signals(signum))

  def _answer(self, signum):
    if self.received is None:
      self.received = signum
      logging.warning(
          '%s received: saving a checkpoint at the end of the current loop, '
          'then stopping.%s', signum.name,
          ' Press Ctrl-C again to stop at once, without saving.'
          if signum == signal.SIGINT else '')
    elif signum == signal.SIGINT:
      logging.warning('Second Ctrl-C: stopping at once, without saving.')
      for stream in (sys.stdout, sys.stderr):
        stream.flush()
      os._exit(SECOND_CTRL_C_EXIT_CODE)  # pylint: disable=protected-access

  def restore(self):
    """Puts back the handlers and the wakeup fd there were; ends the watcher."""
    for signum, previous in self._previous.items():
      # None: a handler not set from Python, which Python cannot set again.
      signal.signal(signum, signal.SIG_DFL if previous is None else previous)
    signal.set_wakeup_fd(self._previous_fd)
    self._writer.close()
    self._watcher.join()
    self._reader.close()
