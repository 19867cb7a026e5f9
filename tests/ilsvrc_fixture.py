"""A tiny ILSVRC2012 manual-download directory for TFDS's imagenet2012.

`write_ilsvrc_manual_dir` writes the two tars the real builder reads:

* `ILSVRC2012_img_train.tar`: one `<synset>.tar` per class, each holding
  `<synset>_<k>.JPEG` files (k = 1, 2, ...).
* `ILSVRC2012_img_val.tar`: flat `ILSVRC2012_val_00000001.JPEG`, ...

Every image is a real Pillow-encoded JPEG. A class is drawn as two colours in
a stripe or checker pattern fixed by its synset, plus per-image noise and
phase, so a classifier could learn the classes. `experiments.lib.data`
prepares the real builder from such a directory. Checked against tensorflow-datasets 4.9.10
and TF 2.21 on CPU:

1. Validation labels. The builder opens the val tar, sorts its member names
   and zips them with the lines of TFDS's bundled
   `datasets/imagenet2012/validation_labels.txt` (50,000 synsets). So the i-th
   name in sorted order gets line i, whatever number the name carries, and N
   validation images always get the first N lines: n01751748, n09193705,
   n02105855, n04263257, n03125729, n01735189, ... (label ids 65, 970, 230,
   809, 516, 57 in the 1000-class `labels.txt`). None of the first 6 is among
   the default training synsets. The images are drawn with the colours of
   the class each one is given. `tfds_validation_labels(n)` gives those
   synsets; pass them as `synsets` if the validation classes should have
   training images. A missing `ILSVRC2012_img_test.tar` is fine: the builder
   logs a warning and leaves the test split out. The code does the same for
   a missing train or val tar, as long as one of them is there.

2. Preparing and loading (done by `experiments.lib.data`). The call is
   `tfds.builder('imagenet2012', data_dir=d).download_and_prepare(
   download_config=tfds.download.DownloadConfig(manual_dir=m))`. TFDS 4.9.10
   has a bug here (tensorflow/datasets#11212): it declares
   `importlib_resources` only for Python < 3.9 but uses it anyway, so without
   that package this call raises "ModuleNotFoundError: No module named
   'importlib_resources'". pyproject.toml therefore requires importlib_resources. For the default fixture
   (12 train + 6 val images) preparing takes about 0.5 s, after 7-20 s of
   importing TF and TFDS on this 2-core machine. Writing the fixture takes
   0.2 s or less. Then `builder.as_dataset(split='train')` (or 'validation')
   gives dicts {'image': uint8 (None, None, 3), 'label': int64 scalar,
   'file_name': string}. `builder.info.features['label'].num_classes` is 1000,
   and a train label is the synset's index in the sorted `labels.txt`
   (n01440764 -> 0). `as_supervised=True` gives (image, label) pairs.
   `builder.info.splits[...].num_examples` is 12 and 6.

3. Corrupt train JPEGs. `download_and_prepare` does not decode images (the
   Image feature stores the bytes it is given as they are, and statistics are
   off by default), so corrupt files are stored without any message and are
   counted in `num_examples`. The fixture makes two kinds, in turn:
   'truncated' (a valid JPEG cut in half, so the SOI and headers are intact)
   and 'garbage' (random bytes). Both raise `tf.errors.InvalidArgumentError`
   from `tf.io.decode_jpeg` and from `tf.image.decode_image`: "jpeg::Uncompress
   failed. Invalid JPEG data or crop window." for 'truncated', and "Unknown
   image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required." for
   'garbage'. `as_dataset` decodes with `tf.image.decode_image`, so `next()`
   on its iterator raises that error at each bad example. (With an unbatched
   iterator, the next `next()` goes on to the following example. Only that
   case was checked.) To skip and count such images, load with
   `decoders={'image': tfds.decode.SkipDecoding()}` (the 'image' feature is
   then a scalar tf.string) and decode each image yourself.

4. Network. In TFDS 4.9.10 `gcs_utils._is_gcs_disabled` is True by default,
   so building and preparing make no network calls (strace showed no
   connect() calls). No environment variable is needed.
   `try_download_gcs=False` is passed anyway to be safe. Noise you can ignore:
   absl's "ImageNet 2012 Challenge test split not found ...", "Downloading and
   preparing dataset Unknown size ..." and the tqdm bars, TF's oneDNN and
   cpu_feature_guard lines, "tf_record_dataset_op.cc ... default buffer size",
   and, when corrupt images are decoded, "jpeg_mem.cc ... Premature end of
   JPEG data" and "Local rendezvous is aborting with status:
   INVALID_ARGUMENT". TF_CPP_MIN_LOG_LEVEL=3 hides the C++ lines.
"""

import importlib.util
import io
import os
import tarfile
import zlib

import numpy as np
from PIL import Image

TRAIN_TAR = 'ILSVRC2012_img_train.tar'
VAL_TAR = 'ILSVRC2012_img_val.tar'
CORRUPT_KINDS = ('truncated', 'garbage')


def _tfds_imagenet_file(name):
  """Returns the path of a file bundled with TFDS's imagenet2012 builder.

  Finds the package without importing it, so TensorFlow is not loaded.
  """
  spec = importlib.util.find_spec('tensorflow_datasets')
  if spec is None:
    raise ImportError('tensorflow_datasets is not installed.')
  root = spec.submodule_search_locations[0]
  return os.path.join(root, 'datasets', 'imagenet2012', name)


def _read_lines(path):
  with open(path) as f:
    return f.read().split()


def imagenet_synsets():
  """Returns the 1000 synsets in TFDS's order, so list index == label id."""
  return _read_lines(_tfds_imagenet_file('labels.txt'))


def tfds_validation_labels(num_validation):
  """Returns the synsets TFDS gives the first `num_validation` val images.

  Args:
    num_validation: How many validation images (at most 50,000).

  Returns:
    A list of synset strings. Item i is the label of the i-th name in sorted
    order.
  """
  return _read_lines(_tfds_imagenet_file('validation_labels.txt'))[
      :num_validation]


def _draw(synset, rng, image_size):
  """Draws one uint8 RGB image whose colours and pattern depend on `synset`.

  Args:
    synset: The class; fixes the two colours, the pattern and its period.
    rng: A numpy Generator for this image's noise and phase.
    image_size: (height, width).

  Returns:
    A uint8 array of shape (height, width, 3).
  """
  cls = np.random.default_rng(zlib.crc32(synset.encode()))
  colours = cls.integers(0, 256, size=(2, 3))
  pattern = cls.integers(0, 3)  # Horizontal stripes, vertical, checker.
  period = int(cls.integers(4, 13))
  height, width = image_size
  offset = rng.integers(0, period, size=2)  # This image's phase.
  y, x = np.mgrid[:height, :width] + offset[:, None, None]
  bands = [y // period, x // period, y // period + x // period][pattern]
  image = colours[bands % 2].astype(np.float64)
  image += rng.normal(0.0, 12.0, size=image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format='JPEG', quality=90)
  return buf.getvalue()


def _corrupt(jpeg_bytes, kind, rng):
  """Returns undecodable bytes: a JPEG cut in half, or random bytes."""
  if kind == 'truncated':
    return jpeg_bytes[:len(jpeg_bytes) // 2]
  return rng.bytes(len(jpeg_bytes))


def _add(tar, name, data):
  """Adds `data` to an open tar as a regular file called `name`."""
  info = tarfile.TarInfo(name)
  info.size = len(data)
  info.mode = 0o644
  tar.addfile(info, io.BytesIO(data))


def write_ilsvrc_manual_dir(manual_dir,
                            synsets=('n01440764', 'n01443537', 'n01484850'),
                            train_per_class=4,
                            num_validation=6,
                            image_size=(48, 40),
                            corrupt_train=0,
                            seed=0):
  """Writes a tiny ILSVRC2012 manual dir that TFDS's imagenet2012 accepts.

  Which train files are corrupt: the last file of the first class, then of
  the second class, and so on round the classes, then the second-to-last
  files, and so on. The kinds alternate 'truncated', 'garbage', ... (see
  the module docstring).

  Args:
    manual_dir: Directory to write into. It is created if needed.
    synsets: The training classes. Each must be one of TFDS's 1000 synsets.
    train_per_class: Train JPEGs per class, at least 1.
    num_validation: Validation JPEGs, from 1 to 50,000.
    image_size: (height, width) of every image.
    corrupt_train: How many train files to make undecodable.
    seed: Seed for the per-image noise and the corrupt bytes.

  Returns:
    A dict with keys:
      'manual_dir', 'train_tar', 'val_tar': the paths written.
      'num_classes': 1000.
      'num_examples': {'train': n, 'validation': n}, counting corrupt files.
      'train_labels': {file_name: label_id} for every train file.
      'validation_files': val file names in sorted order.
      'validation_synsets': the synset TFDS gives each of them.
      'validation_labels': {file_name: label_id} as TFDS will assign them.
      'corrupt_train_files': {file_name: 'truncated' or 'garbage'}.

  Raises:
    ValueError: If a synset is unknown or repeated, or a count is out of
      range.
  """
  synsets = list(synsets)
  all_synsets = imagenet_synsets()
  label_id = {s: i for i, s in enumerate(all_synsets)}
  unknown = [s for s in synsets if s not in label_id]
  if unknown or not synsets or len(set(synsets)) != len(synsets):
    raise ValueError(f'Need distinct ImageNet synsets, got {synsets}.')
  if train_per_class < 1 or not 1 <= num_validation <= 50000:
    raise ValueError('Need train_per_class >= 1 and 1 <= num_validation '
                     '<= 50000.')
  num_train = len(synsets) * train_per_class
  if not 0 <= corrupt_train <= num_train:
    raise ValueError(f'corrupt_train must be in [0, {num_train}].')

  rng = np.random.default_rng(seed)
  os.makedirs(manual_dir, exist_ok=True)
  corrupt = {}
  for i in range(corrupt_train):
    synset = synsets[i % len(synsets)]
    k = train_per_class - i // len(synsets)
    corrupt[f'{synset}_{k}.JPEG'] = CORRUPT_KINDS[i % 2]

  train_labels = {}
  train_tar = os.path.join(manual_dir, TRAIN_TAR)
  with tarfile.open(train_tar, 'w') as outer:
    for synset in synsets:
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode='w') as inner:
        for k in range(1, train_per_class + 1):
          name = f'{synset}_{k}.JPEG'
          data = _jpeg(_draw(synset, rng, image_size))
          if name in corrupt:
            data = _corrupt(data, corrupt[name], rng)
          _add(inner, name, data)
          train_labels[name] = label_id[synset]
      _add(outer, f'{synset}.tar', inner_bytes.getvalue())

  val_files = [f'ILSVRC2012_val_{i:08d}.JPEG'
               for i in range(1, num_validation + 1)]
  val_synsets = tfds_validation_labels(num_validation)
  val_tar = os.path.join(manual_dir, VAL_TAR)
  with tarfile.open(val_tar, 'w') as tar:
    for name, synset in zip(val_files, val_synsets):
      _add(tar, name, _jpeg(_draw(synset, rng, image_size)))

  return {
      'manual_dir': os.fspath(manual_dir),
      'train_tar': train_tar,
      'val_tar': val_tar,
      'num_classes': len(all_synsets),
      'num_examples': {'train': num_train, 'validation': num_validation},
      'train_labels': train_labels,
      'validation_files': val_files,
      'validation_synsets': val_synsets,
      'validation_labels': {n: label_id[s]
                            for n, s in zip(val_files, val_synsets)},
      'corrupt_train_files': corrupt,
  }
