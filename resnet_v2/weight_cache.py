"""Published weight files, fetched once into a local cache and checked.

    path = weight_cache.fetch(resnet_v2.get_model_spec('bit_r50x1').weights[0])

A file goes to `$RESNET_V2_HOME` (default `$XDG_CACHE_HOME/resnet_v2`, i.e.
`~/.cache/resnet_v2`) under its URL's path, so the cache of
`https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz` is
`~/.cache/resnet_v2/bit_models/BiT-M-R50x1.npz`. A cache laid out that way
is also a mirror: served by any web server, or as a directory.

The download is Keras's `keras.utils.get_file` (its progress bar, its
errors, its archive extraction); this module adds what it lacks for files
that several processes share and that may be fetched behind a firewall:

- a download goes to a temporary directory beside its place and is renamed
  there only when complete and verified, so a dropped connection or a killed
  process leaves no file that looks whole;
- a lock file (`fcntl.flock`) around the fetch, so the workers of one job
  fetch a file once and never see it half written;
- the publisher's hash where there is one (Keras's MD5s): a mismatch is
  refused, naming both hashes (get_file's own check names only the
  expected one, and a mirror copied with tf.io.gfile or a file put in the
  cache by hand does not pass through it), and nothing is kept;
- the SHA-256 of what was fetched, in `<file>.sha256`, logged once;
- `RESNET_V2_OFFLINE=1`: never touch the network; a missing file is an error
  that names its URL and the exact path to put it at;
- `RESNET_V2_MIRROR=BASE`: every URL's scheme and host replaced by BASE, its
  path kept. BASE is `http(s)://host[/prefix]`, or anything `tf.io.gfile`
  reads (`gs://bucket/prefix`, a local or mounted directory), copied with it.
"""

import dataclasses
import fcntl
import glob
import hashlib
import os
import shutil
import tempfile
from typing import Optional
import urllib.parse

from absl import logging
import keras
import tensorflow as tf

HOME = 'RESNET_V2_HOME'
OFFLINE = 'RESNET_V2_OFFLINE'
MIRROR = 'RESNET_V2_MIRROR'
_ARCHIVES = ('.tar.gz', '.tgz', '.tar', '.zip')


class FetchError(OSError):
  """A published file could not be fetched, or what arrived is not it."""


@dataclasses.dataclass(frozen=True)
class PublishedFile:
  """A weight file as its source publishes it.

  Attributes:
    url: Where the source publishes it.
    tag: The name of this set of weights among a network's ('imagenet',
      'BiT-M', 'a1h_in1k', ...): `create_model(name, pretrained=tag)`.
    num_classes: The classes of its head; None for a file without one
      (Keras's `_notop`).
    md5: The MD5 the source publishes, checked after every download; None
      where it publishes none.
    member: For an archive, the path inside it that is the weights (the
      tf-slim checkpoint); the archive is extracted beside itself.
  """
  url: str
  tag: str
  num_classes: Optional[int]
  md5: Optional[str] = None
  member: Optional[str] = None

  @property
  def path(self):
    """Its place under the cache (and under a mirror): the URL's path."""
    return urllib.parse.urlsplit(self.url).path.lstrip('/')


def home():
  """The cache directory: $RESNET_V2_HOME, else $XDG_CACHE_HOME/resnet_v2."""
  if os.environ.get(HOME):
    return os.path.expanduser(os.environ[HOME])
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache')
  return os.path.join(os.path.expanduser(cache), 'resnet_v2')


def _offline():
  return os.environ.get(OFFLINE, '').strip().lower() not in ('', '0', 'false')


def cache_path(published):
  """Where a published file is (or will be) in the cache."""
  return os.path.join(home(), *published.path.split('/'))


def source_url(published):
  """The URL to fetch from: the published one, or its place on the mirror."""
  base = os.environ.get(MIRROR, '').strip()
  if not base:
    return published.url
  return f'{base.rstrip("/")}/{published.path}'


def fetch(published):
  """The local path of a published file, fetched into the cache if needed.

  A file in the cache is used without the network. Otherwise (unless
  $RESNET_V2_OFFLINE is set) it is downloaded with a progress bar, checked
  against the published MD5, renamed into place and its SHA-256 recorded;
  an archive is then extracted beside itself, once.

  Args:
    published: A `PublishedFile`.

  Returns:
    The weight file's path; for an archive, the path of its `member`.

  Raises:
    FetchError: Offline without the file, a failed download (HTTP error,
      unreachable host, dropped connection) or a hash mismatch, each saying
      what to do.
  """
  path = cache_path(published)
  if not (os.path.exists(path) and os.path.exists(path + '.sha256')):
    if not os.path.exists(path) and _offline():
      raise FetchError(
          f'{OFFLINE} is set and the file is not in the cache: download '
          f'{published.url} on a machine that can, and put it at exactly '
          f'{path} (the cache is ${HOME}); or unset {OFFLINE}, or set '
          f'{MIRROR} to a mirror you can reach.')
    with _locked(path):
      if not os.path.exists(path):
        _download(published, path)
      if not os.path.exists(path + '.sha256'):
        _record(published, path)  # A file put there by hand.
  if published.member is None:
    return path
  return _extracted(published, path)


def _download(published, path):
  """Downloads a published file to `path`, atomically, checking its MD5."""
  url, name = source_url(published), os.path.basename(path)
  partial = tempfile.mkdtemp(prefix=f'.{name}.partial-',
                             dir=os.path.dirname(path))
  logging.info('Fetching %s to %s.', url, path)
  try:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ('http', 'https', 'ftp', 'file'):
      got = _get_file(url, partial, path)
    else:  # gs://, a directory: what TensorFlow's file system reads.
      got = os.path.join(partial, name)
      try:
        tf.io.gfile.copy(url, got)
      except tf.errors.OpError as e:
        raise FetchError(f'Fetching {url} failed: {e.message}') from None
    _check_md5(published, got, url)
    _write_sha256(got)
    os.replace(got, path)
    os.replace(got + '.sha256', path + '.sha256')
  finally:
    shutil.rmtree(partial, ignore_errors=True)
  logging.info('%s: SHA-256 %s (in %s.sha256).', path,
               _read_sha256(path), path)


def _get_file(url, directory, path):
  """Keras's download into `directory`, for `path`: its progress bar, no
  cache of its own. Its errors (a bare Exception for HTTP and connection
  errors, a dropped connection's short read among them) become a
  `FetchError`."""
  try:
    return keras.utils.get_file(os.path.basename(path), url,
                                cache_dir=directory, cache_subdir=directory)
  except Exception as e:  # pylint: disable=broad-except
    raise FetchError(
        f'Fetching {url} failed ({e}). Nothing was kept; run again to start '
        f'over, set {MIRROR} to a mirror you can reach, or put the file at '
        f'{path} by hand and set {OFFLINE}=1.') from None


def _other_md5(published, path):
  """The file's MD5 if the source publishes another, else None."""
  if published.md5 is None:
    return None
  digest = _hash(path, hashlib.md5())
  return digest if digest != published.md5 else None


def _check_md5(published, path, url):
  digest = _other_md5(published, path)
  if digest:
    raise FetchError(
        f'{url} is not the published file: its MD5 is {digest}, the '
        f'published MD5 is {published.md5} (from {published.url}). Nothing '
        'was kept. A mirror or proxy may serve another or a truncated file: '
        'fetch it from the published URL, or compare the two.')


def _record(published, path):
  """Checks and records a file that is in the cache without a record (put
  there by hand, or renamed into place by a process that then died)."""
  digest = _other_md5(published, path)
  if digest:
    raise FetchError(
        f'{path} is not {published.url}: its MD5 is {digest}, the '
        f'published MD5 is {published.md5}. Replace or delete it.')
  _write_sha256(path)
  logging.info('%s: SHA-256 %s (in %s.sha256).', path, _read_sha256(path),
               path)


def _extracted(published, path):
  """The member of an archive in the cache, extracted once beside it.

  The extraction is `get_file`'s too: given a directory that holds the
  archive already, it extracts it without downloading.
  """
  name = os.path.basename(path)
  stem = next((name[:-len(s)] for s in _ARCHIVES if name.endswith(s)), name)
  target = os.path.join(os.path.dirname(path), stem)
  if not os.path.isdir(target):
    with _locked(target):
      if not os.path.isdir(target):
        partial = tempfile.mkdtemp(prefix=f'.{stem}.partial-',
                                   dir=os.path.dirname(path))
        try:
          os.link(path, os.path.join(partial, name))
          got = keras.utils.get_file(name, published.url, extract=True,
                                     cache_dir=partial, cache_subdir=partial)
          if not os.path.isdir(got):
            raise FetchError(f'{path} is not an archive, so it is not '
                             f'{published.url}: delete it and fetch again.')
          os.replace(got, target)
        finally:
          shutil.rmtree(partial, ignore_errors=True)
  member = os.path.join(target, published.member)
  if not (os.path.exists(member) or os.path.exists(member + '.index')):
    raise FetchError(
        f'{path} has no {published.member} (it holds '
        f'{", ".join(sorted(os.listdir(target))) or "nothing"}): it is not '
        f'{published.url}. Delete {path} and {target} and fetch it again.')
  return member


class _locked:
  """Holds `<path>.lock` (an exclusive `flock`) and, inside it, removes the
  partial downloads of processes that died while holding it."""

  def __init__(self, path):
    self._path = path
    self._file = None

  def __enter__(self):
    directory, name = os.path.split(self._path)
    os.makedirs(directory, exist_ok=True)
    self._file = open(os.path.join(directory, f'.{name}.lock'), 'a')
    fcntl.flock(self._file, fcntl.LOCK_EX)
    for stale in glob.glob(os.path.join(glob.escape(directory),
                                        f'.{glob.escape(name)}.partial-*')):
      shutil.rmtree(stale, ignore_errors=True)
    return self

  def __exit__(self, *unused):
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()


def _hash(path, hasher):
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      hasher.update(chunk)
  return hasher.hexdigest()


def _write_sha256(path):
  """Writes `<path>.sha256` as sha256sum does: '<hex>  <name>'."""
  with open(path + '.sha256', 'w') as f:
    f.write(f'{_hash(path, hashlib.sha256())}  {os.path.basename(path)}\n')


def _read_sha256(path):
  with open(path + '.sha256') as f:
    return f.read().split()[0]
