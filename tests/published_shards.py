"""Shards as tf-slim's build_imagenet_data.py writes them, written here.

The records are built key by key from slim's `_convert_to_example`, not with
the project's `shard_format`, so the reader is tested against the published
format rather than against its own writer.
"""

import io

import numpy as np
from PIL import Image
import tensorflow as tf

# Three ILSVRC2012 synsets and their texts: slim's labels 1, 2, 3.
CLASSES = (('n01440764', 'tench, Tinca tinca'),
           ('n01443537', 'goldfish, Carassius auratus'),
           ('n01484850', 'great white shark, white shark'))
# A colour per class: learnable from any crop.
COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 220))


def jpeg(array):
  """A uint8 [h, w, 3] array as JPEG bytes."""
  out = io.BytesIO()
  Image.fromarray(array).save(out, 'JPEG', quality=95)
  return out.getvalue()


def class_image(label, rng, size=40):
  """A noisy image in the colour of slim label `label` (1-based)."""
  colour = np.array(COLOURS[label - 1], np.float32)
  noise = rng.normal(0, 25, (size, size, 3))
  return np.clip(colour + noise, 0, 255).astype(np.uint8)


def example(image_bytes, label, synset, text, height, width, filename,
            boxes=()):
  """slim's `_convert_to_example`: one image's serialized Example.

  `boxes` are (xmin, ymin, xmax, ymax) relative to the image; the TPU's
  imagenet_to_gcs.py writes none.
  """
  def strings(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  def ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

  def floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))

  xmin, ymin, xmax, ymax = (list(c) for c in zip(*boxes)) if boxes else ([],) * 4
  feature = {
      'image/height': ints([height]), 'image/width': ints([width]),
      'image/colorspace': strings(b'RGB'), 'image/channels': ints([3]),
      'image/class/label': ints([label]),
      'image/class/synset': strings(synset.encode()),
      'image/class/text': strings(text.encode()),
      'image/object/bbox/xmin': floats(xmin),
      'image/object/bbox/xmax': floats(xmax),
      'image/object/bbox/ymin': floats(ymin),
      'image/object/bbox/ymax': floats(ymax),
      'image/object/bbox/label': ints([label] * len(boxes)),
      'image/format': strings(b'JPEG'),
      'image/filename': strings(filename.encode()),
      'image/encoded': strings(image_bytes),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def write(directory, split, num_shards, per_class, seed=0, size=40):
  """Writes `split`'s shards of CLASSES, `per_class` images each, dealt out
  round-robin over the shards as slim deals its batches.

  Returns:
    The number of images written.
  """
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  records = []
  for label, (synset, text) in enumerate(CLASSES, 1):
    for i in range(per_class):
      data = jpeg(class_image(label, rng, size))
      records.append(example(data, label, synset, text, size, size,
                             f'{synset}_{i}.JPEG'))
  order = rng.permutation(len(records))
  for shard in range(num_shards):
    name = f'{split}-{shard:05d}-of-{num_shards:05d}'
    with tf.io.TFRecordWriter(str(directory / name)) as writer:
      for index in order[shard::num_shards]:
        writer.write(records[index])
  return len(records)
