"""Weights by name: create_model(name, pretrained=True) and --pretrained.

Every test serves fixture files at their published paths from a real HTTP
server on 127.0.0.1 (Python's http.server in a thread, port 0), reached
through RESNET_V2_MIRROR; RESNET_V2_HOME is the test's directory. Nothing
here touches the internet.
"""

import dataclasses
import hashlib
import http.server
import os
import subprocess
import sys
import tarfile
import threading
import time

from absl import logging as absl_logging
import numpy as np
import pytest
import tensorflow as tf

import resnet_v2
from experiments.lib.config import Config
from experiments.lib.errors import FlagError
from resnet_v2 import pretrained
from resnet_v2 import weight_cache
from tests import numpy_families
from tests import run_cli

BIT = 'bit_models/BiT-M-R50x1.npz'
KERAS = ('tensorflow/keras-applications/resnet/'
         'resnet50v2_weights_tf_dim_ordering_tf_kernels.h5')
TINY, UNITS, CLASSES = 'bit_tiny_by_name', (1, 1, 1, 1), 11
IMAGES = np.random.default_rng(5).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)


class _Server:
  """http.server serving `root` in a thread. It records every GET; a path in
  `drop` gets its full Content-Length and then half its bytes and a closed
  connection; `hold`, if set, is called with the handler to serve a GET."""

  def __init__(self, root):
    self.requests, self.drop, self.hold = [], set(), None
    outer = self

    class Handler(http.server.SimpleHTTPRequestHandler):

      def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(root), **kwargs)

      def log_message(self, *args):
        del args

      def do_GET(self):
        outer.requests.append(self.path)
        if self.path.lstrip('/') in outer.drop:
          data = (root / self.path.lstrip('/')).read_bytes()
          self.send_response(200)
          self.send_header('Content-Length', str(len(data)))
          self.end_headers()
          self.wfile.write(data[:len(data) // 2])
          self.wfile.flush()
          self.close_connection = True
        elif outer.hold is not None:
          outer.hold(self, (root / self.path.lstrip('/')).read_bytes())
        else:
          super().do_GET()

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def stop(self):
    if self.thread.is_alive():
      self.httpd.shutdown()
      self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
  """(served directory, server): RESNET_V2_HOME in tmp_path, the mirror set."""
  root = tmp_path / 'served'
  root.mkdir()
  server = _Server(root)
  monkeypatch.setenv('RESNET_V2_HOME', str(tmp_path / 'cache'))
  monkeypatch.setenv('RESNET_V2_MIRROR', server.url)
  monkeypatch.delenv('RESNET_V2_OFFLINE', raising=False)
  yield root, server
  server.stop()


@pytest.fixture
def tiny_name():
  """A small BiT network registered by name, its weights published at BiT's
  R50x1 URL."""
  resnet_v2.register_model(dataclasses.replace(
      resnet_v2.get_model_spec('bit_r50x1'), name=TINY, num_units=UNITS,
      width=0.5, num_classes=CLASSES, weights=(weight_cache.PublishedFile(
          f'https://storage.googleapis.com/{BIT}', 'BiT-M', CLASSES),)))
  yield TINY
  pretrained._MODELS.pop(TINY)  # pylint: disable=protected-access


def _publish_bit(root, seed=0):
  weights = numpy_families.random_weights(
      numpy_families.bit_shapes(UNITS, 0.5, CLASSES), 'hwio', seed=seed)
  (root / BIT).parent.mkdir(parents=True, exist_ok=True)
  np.savez(root / BIT, **weights)
  return root / BIT


def _files(directory):
  """Every file under a directory but the lock files, relative."""
  return sorted(os.path.relpath(os.path.join(d, f), directory)
                for d, _, names in os.walk(directory) for f in names
                if not f.endswith('.lock'))


def test_pretrained_fetches_once_then_loads_without_the_server(
    mirror, tiny_name, tmp_path, caplog):
  root, server = mirror
  published = _publish_bit(root)
  absl_logging.set_verbosity(absl_logging.INFO)
  with caplog.at_level('INFO', logger='absl'):
    fetched = resnet_v2.create_model(tiny_name, input_shape=(32, 32, 3),
                                     pretrained=True)
  cached = tmp_path / 'cache' / BIT
  assert server.requests == [f'/{BIT}']
  assert f'Fetching {server.url}/{BIT} to {cached}.' in caplog.text
  sha256 = hashlib.sha256(published.read_bytes()).hexdigest()
  assert (tmp_path / 'cache' / (BIT + '.sha256')).read_text().split()[0] == sha256
  assert caplog.text.count(f'SHA-256 {sha256}') == 1
  by_path = resnet_v2.create_model(tiny_name, input_shape=(32, 32, 3),
                                   checkpoint_path=str(published))
  assert fetched.output.shape[-1] == CLASSES
  np.testing.assert_array_equal(fetched(IMAGES, training=False),
                                by_path(IMAGES, training=False))

  server.stop()
  again = resnet_v2.create_model(tiny_name, 3, (32, 32, 3), pretrained=True)
  assert again.output.shape[-1] == 3  # a fresh head, the rest as fetched
  np.testing.assert_array_equal(
      again.get_layer(f'{TINY}.conv1').kernel, by_path.get_layer(f'{TINY}.conv1').kernel)
  assert len(server.requests) == 1 and caplog.text.count('SHA-256') == 1


def test_a_hash_mismatch_is_refused_and_nothing_is_kept(mirror, tmp_path):
  root, server = mirror
  (root / KERAS).parent.mkdir(parents=True)
  (root / KERAS).write_bytes(b'not the published weights' * 100)
  actual = hashlib.md5((root / KERAS).read_bytes()).hexdigest()
  with pytest.raises(weight_cache.FetchError) as error:
    resnet_v2.create_model('keras_resnet50v2', pretrained=True)
  message = str(error.value)
  assert f'its MD5 is {actual}' in message
  assert 'the published MD5 is 3ef43a0b657b3be2300d5770ece849e0' in message
  assert server.requests == [f'/{KERAS}']
  assert _files(tmp_path / 'cache') == []


def test_a_dropped_connection_leaves_nothing_and_the_next_call_starts_clean(
    mirror, tiny_name, tmp_path):
  root, server = mirror
  _publish_bit(root)
  server.drop.add(BIT)
  with pytest.raises(weight_cache.FetchError, match='Nothing was kept; run again'):
    resnet_v2.create_model(tiny_name, input_shape=(32, 32, 3), pretrained=True)
  assert _files(tmp_path / 'cache') == []
  server.drop.clear()
  resnet_v2.create_model(tiny_name, input_shape=(32, 32, 3), pretrained=True)
  assert _files(tmp_path / 'cache') == [BIT, BIT + '.sha256']
  assert server.requests == [f'/{BIT}'] * 2


def test_a_missing_file_is_a_clear_error(mirror, tiny_name, tmp_path):
  _, server = mirror
  with pytest.raises(weight_cache.FetchError,
                     match=f'Fetching {server.url}/{BIT} failed .*404'):
    resnet_v2.create_model(tiny_name, input_shape=(32, 32, 3), pretrained=True)
  assert _files(tmp_path / 'cache') == []


def test_offline_never_touches_the_network(mirror, tiny_name, tmp_path, monkeypatch):
  root, server = mirror
  published = _publish_bit(root)
  monkeypatch.setenv('RESNET_V2_OFFLINE', '1')
  place = tmp_path / 'cache' / BIT
  with pytest.raises(weight_cache.FetchError) as error:
    resnet_v2.create_model(tiny_name, input_shape=(32, 32, 3), pretrained=True)
  assert (f'download https://storage.googleapis.com/{BIT} on a machine that '
          f'can, and put it at exactly {place} ') in str(error.value)
  assert '\n' not in str(error.value) and server.requests == []
  # Put there by hand, as the message says: it loads, still offline.
  place.parent.mkdir(parents=True)
  place.write_bytes(published.read_bytes())
  resnet_v2.create_model(tiny_name, input_shape=(32, 32, 3), pretrained=True)
  assert server.requests == [] and (tmp_path / 'cache' / (BIT + '.sha256')).exists()


def test_a_mirror_directory_and_tf_slims_archive(mirror, tmp_path, monkeypatch):
  """RESNET_V2_MIRROR may be what tf.io.gfile reads (gs://, a directory); a
  tf-slim archive is extracted once, its V1 checkpoint read by content."""
  root, server = mirror
  archive = root / 'models' / 'resnet_v2_50_2017_04_14.tar.gz'
  archive.parent.mkdir()
  with tf.Graph().as_default():
    tf.compat.v1.get_variable('resnet_v2_50/conv1/weights', [1, 1, 3, 2],
                              initializer=tf.compat.v1.ones_initializer())
    saver = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1)
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      saver.save(session, str(tmp_path / 'resnet_v2_50.ckpt'), write_meta_graph=False)
  (tmp_path / 'eval.graph').write_text('a graph')
  with tarfile.open(archive, 'w:gz') as tar:  # The published archive's files.
    tar.add(tmp_path / 'resnet_v2_50.ckpt', 'resnet_v2_50.ckpt')
    tar.add(tmp_path / 'eval.graph', 'eval.graph')
  monkeypatch.setenv('RESNET_V2_MIRROR', str(root))  # No server.
  path = pretrained.fetch_weights(resnet_v2.get_model_spec('resnet_v2_50'))
  assert path == str(tmp_path / 'cache' / 'models' / 'resnet_v2_50_2017_04_14' /
                     'resnet_v2_50.ckpt')
  weights = resnet_v2.open_weights(path)
  np.testing.assert_array_equal(weights.read('resnet_v2_50/conv1/weights'), 1.0)
  assert server.requests == []


def test_every_name_records_its_published_files(monkeypatch):
  spec = resnet_v2.get_model_spec
  assert spec('resnet_v2_101').weights[0].url == (
      'http://download.tensorflow.org/models/resnet_v2_101_2017_04_14.tar.gz')
  with pytest.raises(ValueError, match='resnet_v2_200 has no published weights'):
    resnet_v2.create_model('resnet_v2_200', pretrained=True)
  keras_files = spec('keras_resnet152v2').weights
  assert [(f.url.rsplit('/', 1)[1], f.md5) for f in keras_files] == [
      ('resnet152v2_weights_tf_dim_ordering_tf_kernels.h5',
       'a49b44d1979771252814e80f8ec446f9'),
      ('resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5',
       'ed17cf2e0169df9d443503ef94b23b33')]
  assert pretrained.published_file(spec('keras_resnet50v2')).num_classes == 1000
  for classes in (7, 0):  # another head, or none: the file without top
    assert pretrained.published_file(
        spec('keras_resnet50v2'), True, classes).url.endswith('_notop.h5')
  bit = spec('bit_r101x3')
  assert [pretrained.published_file(bit, tag).url for tag in (
      True, 'BiT-S', 'BiT-M-ILSVRC2012')] == [
          f'https://storage.googleapis.com/bit_models/{name}.npz' for name in (
              'BiT-M-R101x3', 'BiT-S-R101x3', 'BiT-M-R101x3-ILSVRC2012')]
  with pytest.raises(ValueError, match="no published weights 'BiT-L'; its "
                     'weights are BiT-M, BiT-S, BiT-M-ILSVRC2012'):
    pretrained.published_file(bit, 'BiT-L')
  assert spec('timm_resnetv2_50x1_bit').weights[0].url == (
      'https://huggingface.co/timm/resnetv2_50x1_bit.goog_distilled_in1k/'
      'resolve/main/model.safetensors')
  assert all(spec(name).weights for name in resnet_v2.list_models()
             if name != 'resnet_v2_200')
  monkeypatch.setenv('RESNET_V2_MIRROR', 'http://127.0.0.1:8000/')
  assert weight_cache.source_url(spec('bit_r50x1').weights[0]) == (
      'http://127.0.0.1:8000/bit_models/BiT-M-R50x1.npz')


def test_the_pretrained_flag_is_checked_with_the_network():
  with pytest.raises(FlagError, match='Give --pretrained .* or --init_checkpoint'):
    Config(network='bit_r50x1', pretrained=True, init_checkpoint='BiT-M-R50x1.npz')
  with pytest.raises(FlagError, match='--pretrained needs a pretrained --network name'):
    Config(depth=50, pretrained=True)
  with pytest.raises(FlagError, match='resnet_v2_200 has no published weights'):
    Config(network='resnet_v2_200', pretrained=True)


_FETCH = '''
import os, sys, time
from resnet_v2 import weight_cache
marks, me = sys.argv[1], sys.argv[2]
open(os.path.join(marks, 'ready-' + me), 'w').close()
while not all(os.path.exists(os.path.join(marks, 'ready-' + i)) for i in '01'):
  time.sleep(0.01)
print(weight_cache.fetch(weight_cache.PublishedFile(
    'https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz', 'BiT-M', 11)))
'''


def test_two_processes_fetching_at_once_fetch_once(mirror, tmp_path):
  """Both start fetching together (a barrier of files); the server sends half
  the file and holds the rest until the other process waits on the lock (or,
  without one, has asked for the file itself)."""
  root, server = mirror
  published = _publish_bit(root)
  marks = tmp_path / 'marks'
  marks.mkdir()
  lock = tmp_path / 'cache' / 'bit_models' / '.BiT-M-R50x1.npz.lock'

  def other_waits():
    if len(server.requests) > 1 or not lock.exists():
      return len(server.requests) > 1
    inode = f':{os.stat(lock).st_ino} '
    with open('/proc/locks') as locks:
      return any('-> FLOCK' in line and inode in line for line in locks)

  def hold(handler, data):
    handler.send_response(200)
    handler.send_header('Content-Length', str(len(data)))
    handler.end_headers()
    handler.wfile.write(data[:len(data) // 2])
    handler.wfile.flush()
    deadline = time.time() + 120
    while not other_waits():
      assert time.time() < deadline, 'the other process never waited'
      time.sleep(0.01)
    handler.wfile.write(data[len(data) // 2:])

  server.hold = hold
  processes = [subprocess.Popen(
      [sys.executable, '-c', _FETCH, str(marks), me], env=run_cli.env(),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in '01']
  outputs = [p.communicate(timeout=300) for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs
  cached = tmp_path / 'cache' / BIT
  assert [out.strip().splitlines()[-1] for out, _ in outputs] == [str(cached)] * 2
  assert server.requests == [f'/{BIT}']
  assert cached.read_bytes() == published.read_bytes()
  assert _files(tmp_path / 'cache') == [BIT, BIT + '.sha256']


def test_a_process_killed_mid_file_leaves_nothing_that_looks_whole(mirror, tmp_path):
  root, server = mirror
  published = _publish_bit(root)
  half_sent, release = threading.Event(), threading.Event()

  def hold(handler, data):
    handler.send_response(200)
    handler.send_header('Content-Length', str(len(data)))
    handler.end_headers()
    handler.wfile.write(data[:len(data) // 2])
    handler.wfile.flush()
    half_sent.set()
    release.wait(120)

  server.hold = hold
  (tmp_path / 'marks').mkdir()
  for me in '01':  # the script's barrier, passed at once
    (tmp_path / 'marks' / f'ready-{me}').touch()
  process = subprocess.Popen([sys.executable, '-c', _FETCH, str(tmp_path / 'marks'), '0'],
                             env=run_cli.env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  assert half_sent.wait(120)
  process.kill()
  process.wait()
  release.set()
  partials = [f for f in _files(tmp_path / 'cache') if '.partial-' in f]
  assert _files(tmp_path / 'cache') == partials  # nothing at the file's name
  server.hold = None
  path = weight_cache.fetch(resnet_v2.get_model_spec('bit_r50x1').weights[0])
  assert open(path, 'rb').read() == published.read_bytes()
  assert _files(tmp_path / 'cache') == [BIT, BIT + '.sha256']  # partials gone


@pytest.mark.slow
def test_the_scripts_evaluate_a_name_with_pretrained(mirror, tmp_path):
  """--network=bit_r50x1 --pretrained --mode=eval: the published file (here a
  10-class one, digits' classes) is fetched and evaluated, no other flag."""
  root, server = mirror
  weights = numpy_families.random_weights(
      numpy_families.bit_shapes((3, 4, 6, 3), 1, 10), 'hwio', kernel_mean=0.05)
  (root / BIT).parent.mkdir(parents=True)
  np.savez(root / BIT, **weights)
  output = run_cli.run('experiments.digits', '--network=bit_r50x1', '--pretrained',
                       '--mode=eval', '--image_size=32', '--batch_size=64',
                       '--precision=float32', '--show=0',
                       f'--model_dir={tmp_path / "run"}').stdout
  assert f'Fetching {server.url}/{BIT} to {tmp_path / "cache" / BIT}' in output
  assert 'Initialized from the published bit weights' in output
  assert 'eval at step 0' in output
  refused = run_cli.run('experiments.digits', '--network=bit_r50x1', '--pretrained',
                        '--init_checkpoint=x.npz', check=False)
  assert refused.returncode == 1 and 'Traceback' not in refused.stdout
