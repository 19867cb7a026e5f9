"""`experiments.predict`'s work: the images, their answers and their maps.

An answer is a dict: `image` (the path as given or found), `classes` (the
human-readable names, best first), `labels` (the class labels: synsets,
folder names), `class_ids` and `scores` (probabilities), the top k of each.
"""

import csv
import io
import json
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from experiments.lib import errors
from experiments.lib import files
from experiments.lib import gradcam
from experiments.lib import preprocessing
from experiments.lib.data import folders
from experiments.lib.data.source import IMAGE_EXTENSIONS
from experiments.lib.data.source import SHOWN

# What the exports' serving_default takes as it is; other images go as PNG.
_SERVED_AS_IS = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n')


def find_images(paths):
  """The image files of `paths`: files as given, folders walked recursively.

  Raises:
    errors.DataError: If a path does not exist, or no image is found.
  """
  images = []
  for path in paths:
    if files.isdir(path):
      found = sorted(
          os.path.join(root, name) for root, _, names in tf.io.gfile.walk(path)
          for name in names if name.lower().endswith(IMAGE_EXTENSIONS)
          and folders.is_readable_image(os.path.join(root, name)))
      if not found:
        logging.warning('No image files (%s) in %s.',
                        ', '.join(IMAGE_EXTENSIONS), path)
      images += found
    elif files.exists(path):
      images.append(path)
    else:
      raise errors.DataError(f'{path} does not exist: give image files or '
                             'folders of them.')
  if not images:
    raise errors.DataError(f'No image files ({", ".join(IMAGE_EXTENSIONS)}) '
                           f'in {", ".join(paths)}.')
  return images


def _readable(path):
  """The file's bytes as serving_default takes them (JPEG or PNG), or None
  if it does not decode."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
    image = preprocessing.decode(data)
  except (tf.errors.OpError, OSError):
    return None
  return data if data.startswith(_SERVED_AS_IS) else tf.io.encode_png(
      image).numpy()


def classify(classifier, images, top_k, batch_size):
  """Answers for every image that decodes; the others are named and skipped.

  Raises:
    errors.DataError: If none of the images decodes.
  """
  answers, bad, last = [], [], time.monotonic()
  for start in range(0, len(images), batch_size):
    batch = [(path, _readable(path)) for path in images[start:start + batch_size]]
    bad += [path for path, data in batch if data is None]
    batch = [(path, data) for path, data in batch if data is not None]
    if batch:
      probabilities = np.asarray(classifier.probabilities([d for _, d in batch]))
      for (path, _), row in zip(batch, probabilities):
        best = np.argsort(-row, kind='stable')[:top_k]
        answers.append({
            'image': path, 'classes': [classifier.names[i] for i in best],
            'labels': [classifier.labels[i] for i in best],
            'class_ids': [int(i) for i in best],
            'scores': [float(row[i]) for i in best]})
    if time.monotonic() - last > 10:
      last = time.monotonic()
      logging.info('Classified %d of %d images.', start + len(batch),
                   len(images))
  if bad:
    logging.warning('Skipped %d files that do not decode as images: %s',
                    len(bad), errors.shortlist(bad, SHOWN))
  if not answers:
    raise errors.DataError(
        f'None of the {len(images)} files decodes as an image '
        f'({errors.shortlist(bad, SHOWN)}): give JPEG, PNG, GIF or BMP files.')
  return answers


def show(answers, stream):
  """A line per image: its path, then each class with its probability."""
  width = min(max(len(a['image']) for a in answers), 48)
  for answer in answers:
    classes = '  '.join(f'{name} {score:.3f}' for name, score in
                        zip(answer['classes'], answer['scores']))
    stream.write(f'{answer["image"]:<{width}}  {classes}\n')
  stream.flush()


def write(answers, path):
  """Writes the answers as JSON lines (.jsonl) or CSV rows (.csv)."""
  if path.endswith('.jsonl'):
    text = ''.join(json.dumps(answer) + '\n' for answer in answers)
  else:
    out = io.StringIO()
    writer = csv.writer(out)
    ranks = range(1, len(answers[0]['classes']) + 1)
    writer.writerow(['image'] + [f'{column}_{rank}' for rank in ranks
                                 for column in ('class', 'label', 'score')])
    for answer in answers:
      writer.writerow([answer['image']] + [
          value for row in zip(answer['classes'], answer['labels'],
                               answer['scores']) for value in row])
    text = out.getvalue()
  files.write_atomically(path, text)
  logging.info('Wrote %d answers to %s.', len(answers), path)


def class_index(classifier, text):
  """The class --gradcam_class names: by label, name or index.

  Raises:
    errors.FlagError: If it names no class.
  """
  for names in (classifier.labels, classifier.names):
    if text in names:
      return list(names).index(text)
  if text.isdigit() and int(text) < len(classifier.labels):
    return int(text)
  raise errors.FlagError(
      f'--gradcam_class={text!r} is no class of the model: give a label (e.g. '
      f'{classifier.labels[-1]!r}), a name or an index below '
      f'{len(classifier.labels)}.')


def check_layer(classifier, layer):
  """Refuses a --gradcam_layer that is not an end point, before any work."""
  try:
    gradcam.end_point(classifier.network, layer)
  except ValueError as e:
    raise errors.FlagError(str(e)) from None


def _stems(paths, directory):
  """A distinct DIR/<stem> for each image (stem_2, ... for repeated stems)."""
  stems, used = [], {}
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0]
    used[stem] = used.get(stem, 0) + 1
    stems.append(os.path.join(
        directory, stem if used[stem] == 1 else f'{stem}_{used[stem]}'))
  return stems


def explain(classifier, answers, directory, class_id=None, layer=None,
            batch_size=16):
  """Writes each image's Grad-CAM map into `directory` (see `gradcam.write`)."""
  stems = _stems([a['image'] for a in answers], directory)
  for start in range(0, len(answers), batch_size):
    batch = answers[start:start + batch_size]
    encoded = [_readable(a['image']) for a in batch]  # They decoded.
    images = tf.stack([classifier.preprocess(tf.constant(data))
                       for data in encoded])
    classes = [class_id if class_id is not None else a['class_ids'][0]
               for a in batch]
    cams, _ = gradcam.maps(classifier.network, images, layer, classes)
    for data, cam, stem in zip(encoded, cams, stems[start:]):
      image = preprocessing.decode(data).numpy()
      gradcam.write(stem, image, cam,
                    classifier.window(image.shape[0], image.shape[1]))
  logging.info('Wrote Grad-CAM maps of %d images to %s.', len(answers),
               directory)
