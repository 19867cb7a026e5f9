"""The classifier that `experiments.predict` asks, whatever --model names.

--model is a run directory, an export directory or a pretrained name. Each
becomes a `Classifier`: probabilities for encoded images, computed as the
run's `serving_default` signature computes them (an export's own signature,
or the same `export.Servable` over a network built here), with the model's
own preprocessing and class names; and, where the network is at hand (a run,
a name), that network for Grad-CAM.
"""

import dataclasses
import os
from typing import Callable, Optional, Sequence

from absl import logging
import keras
import tensorflow as tf

import resnet_v2
from experiments.lib import data
from experiments.lib import errors
from experiments.lib import export
from experiments.lib import files
from experiments.lib import network
from experiments.lib import optimization
from experiments.lib import preprocessing
from experiments.lib import run_dir
from experiments.lib import saved_config
from experiments.lib import train
from experiments.lib.config import Config
from experiments.lib.data import tfds as tfds_kind


@dataclasses.dataclass
class Classifier:
  """A model ready to answer.

  Attributes:
    description: What it is, for the log.
    probabilities: fn([encoded JPEG or PNG bytes]) -> float32 [n, classes].
    labels: Each class's label (synset, folder name, index).
    names: Each class's human-readable name.
    network: The Keras network (images in [-1, 1] -> logits), for Grad-CAM;
      None for an export alone.
    preprocess: fn(image bytes) -> the network's input image.
    window: fn(height, width) -> the part of the image the input shows.
  """
  description: str
  probabilities: Callable[[Sequence[bytes]], tf.Tensor]
  labels: Sequence[str]
  names: Sequence[str]
  network: Optional[keras.Model] = None
  preprocess: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
  window: Optional[Callable[[int, int], tuple]] = None


def _lines(path):
  with tf.io.gfile.GFile(path) as f:
    return f.read().splitlines()


def from_export(export_dir):
  """An export's `serving_default`, and the class names it keeps as assets."""
  signature = tf.saved_model.load(export_dir).signatures['serving_default']
  assets = os.path.join(export_dir, 'assets')
  return Classifier(
      f'the export {export_dir}',
      lambda images: signature(image_bytes=tf.constant(images))['probabilities'],
      _lines(os.path.join(assets, 'labels.txt')),
      _lines(os.path.join(assets, 'label_names.txt')))


def _served(description, model, config, augment, labels, names):
  """A `Classifier` over a network: the export's `Servable`, in memory."""
  encoded = preprocessing.eval_fn(augment, config.image_size, True,
                                  config.eval_preprocessing,
                                  config.eval_crop_fraction,
                                  config.resize_method)
  servable = export.Servable(model, config.image_size, encoded, [], labels,
                             names, top_k=1)
  style = config.eval_preprocessing
  if style == 'default':  # The source's own: Inception's crop, else resized.
    style = 'central_crop' if augment == 'inception' else 'resize'
  return Classifier(
      description,
      lambda images: servable.serve_encoded(tf.constant(images))['probabilities'],
      labels, names, model, encoded,
      lambda height, width: preprocessing.eval_window(
          height, width, style, config.eval_crop_fraction))


def from_run(model_dir, need_network=False):
  """A run directory: its export, or its newest checkpoint.

  The network is built from the run's config.json and restored from its
  newest intact checkpoint, with the weights its export would have (the
  moving averages of --ema_decay). Grad-CAM needs it, so `need_network`
  builds it even where there is an export; the answers are then the
  checkpoint's.

  Raises:
    errors.RunDirError: If the run has neither an export nor a checkpoint.
  """
  exported = os.path.join(model_dir, 'export')
  if not need_network and files.exists(os.path.join(exported, export.MARKER)):
    return from_export(exported)
  config = saved_config.config_of(model_dir)
  source = data.load_source(config.dataset, config.data_dir,
                            config.manual_dir, image_size=config.image_size,
                            need_data=False, run_dir=model_dir)
  net = network.resolve(config)
  model = network.build(net, dataclasses.replace(config, trainable='all'),
                        'float32', config.num_classes, config.image_size)
  optimizer = optimization.make_optimizer(
      config, 'float32', optimization.make_schedule(config, source.num_train),
      model)
  latest, _ = run_dir.restore_newest_intact(
      run_dir.training_checkpoint(model, optimizer), model_dir)
  if not latest:
    raise errors.RunDirError(
        f'{model_dir} has no export and no checkpoint to predict with: train '
        'the run first (or give its export directory).')
  for weight, averaged in zip(*_averaged(model, optimizer)):
    weight.assign(averaged)
  labels, names = data.labels_with_offset(source, config.labels_offset)
  return _served(f'the checkpoint {latest}', model, config, source.augment,
                 labels, names)


def _averaged(model, optimizer):
  """(the model's weights, the values its export would have)."""
  with optimization.averaged_weights(model, optimizer):
    values = [tf.identity(w) for w in model.weights]
  return model.weights, values


def _imagenet_classes(spec):
  """(labels, names) of a pretrained name's head."""
  if spec.labels in ('imagenet', 'imagenet+background'):
    labels = tfds_kind.imagenet_synsets()
    names = tfds_kind.imagenet_label_names()
    if spec.labels == 'imagenet+background':
      labels, names = ['background'] + labels, ['background'] + names
    return labels, names
  indices = [str(i) for i in range(spec.num_classes)]
  return indices, indices


def from_name(name, init_checkpoint=None, pretrained=False):
  """A pretrained name with its published weights or a file of them.

  Raises:
    errors.FlagError: If neither weights are given, or they do not load.
  """
  if pretrained:
    network.check_pretrained(name, init_checkpoint)
  elif not init_checkpoint:
    raise errors.FlagError(
        f'--model={name} is a network by name: give its weights, '
        '--pretrained (fetched once into the cache) or --init_checkpoint=FILE '
        "(its family's published file).")
  spec = resnet_v2.get_model_spec(name)
  own = spec.preprocessing
  config = Config(network=name, pretrained=pretrained,
                  init_checkpoint=init_checkpoint, image_size=own.image_size,
                  eval_preprocessing=own.eval,
                  eval_crop_fraction=own.crop_fraction,
                  resize_method=own.resize_method)
  net = network.resolve(config)
  model = network.build(net, config, 'float32', spec.num_classes,
                        own.image_size)
  if pretrained:
    network.load_pretrained(model, net)
  else:
    network.load_init_checkpoint(model, net, config)
  logging.info('%s with the weights of %s.', name,
               init_checkpoint or 'its published file')
  return _served(name, model, config, 'inception', *_imagenet_classes(spec))


def open_classifier(text, init_checkpoint=None, pretrained=False,
                    need_network=False):
  """The `Classifier` that --model names.

  Args:
    text: A run directory, an export directory or a pretrained name.
    init_checkpoint: For a name: its family's weight file.
    pretrained: For a name: its published weights, by name.
    need_network: Whether the Keras network is needed (Grad-CAM).

  Raises:
    errors.UserError: If --model is none of these, or cannot be used so.
  """
  if text in resnet_v2.list_models():
    return from_name(text, init_checkpoint, pretrained)
  if init_checkpoint or pretrained:
    raise errors.FlagError(
        '--init_checkpoint and --pretrained give the weights of a network by '
        f'name; --model={text} is not one ({", ".join(resnet_v2.list_models())}).')
  if not files.isdir(text):
    raise errors.FlagError(
        f'--model={text} is neither a directory (a run or an export) nor a '
        f'network by name ({", ".join(resnet_v2.list_models())}).')
  if files.exists(os.path.join(text, export.MARKER)):
    if need_network:
      raise errors.FlagError(
          f'--gradcam needs the network, which the export {text} does not '
          'keep: give the run directory that made it as --model.')
    return from_export(text)
  if saved_config.load(text) is None:
    raise errors.FlagError(
        f'--model={text} holds neither a run (config.json) nor an export '
        f'({export.MARKER}).')
  return from_run(text, need_network)
