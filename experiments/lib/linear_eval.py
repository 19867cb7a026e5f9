"""Few-shot linear evaluation of a frozen network (--mode=linear_eval).

How BiT and big_vision report few-shot transfer: the network's features
(the pooled `postnorm` output, before the logits) of K training examples per
class are fit with a closed-form ridge regression onto +-1 class targets, and
the resulting linear classifier is scored on the whole evaluation split. As
in big_vision's `fewshot_lsr`, the features are whitened with the training
examples' mean and deviation, a constant feature of 100 stands in for the
(almost unregularized) bias, the penalty is --linear_eval_l2, and each
K is scored on --linear_eval_seeds draws of the examples, averaged.

Features are computed once, in batches: of the evaluation split, and of the
union of the training examples every K and draw needs.
"""

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from experiments.lib import optimization
from experiments.lib import preprocessing
from experiments.lib.errors import DataError

BIAS_FEATURE = 100.0


def ridge_classifier(features, labels, num_classes, l2):
  """Fits a ridge regression of +-1 one-hot targets on whitened features.

  Args:
    features: [N, D] training features.
    labels: [N] int class ids.
    num_classes: The number of classes.
    l2: The ridge penalty.

  Returns:
    predict(features [M, D]) -> [M] predicted class ids.
  """
  x = np.asarray(features, np.float64)
  mean, std = x.mean(axis=0), x.std(axis=0) + 1e-5
  whiten = lambda f: np.pad((np.asarray(f, np.float64) - mean) / std,
                            ((0, 0), (0, 1)), constant_values=BIAS_FEATURE)
  x = whiten(x)
  y = 2.0 * np.eye(num_classes)[labels] - 1.0
  if len(x) >= x.shape[1]:  # (x^T x + l2 I)^-1 x^T y
    w = np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ y)
  else:  # x^T (x x^T + l2 I)^-1 y, the same for fewer examples than features
    w = x.T @ np.linalg.solve(x @ x.T + l2 * np.eye(len(x)), y)
  return lambda f: np.argmax(whiten(f) @ w, axis=1)


def _chosen(labels, num_classes, shots, draws):
  """Per draw, per class, a random order of that class's training examples."""
  orders = []
  for draw in range(draws):
    rng = np.random.default_rng(draw)
    orders.append([rng.permutation(np.flatnonzero(labels == c))
                   for c in range(num_classes)])
  most = max(shots)
  for c in range(num_classes):
    if len(orders[0][c]) < most:
      raise DataError(f'--linear_eval_shots asks for {most} examples of class '
                      f'{c} but the training split has {len(orders[0][c])}.')
  return orders


def _features(model, dataset):
  """(features, labels) of a dataset of (image, label) batches."""
  feature_model = keras.Model(model.input, keras.ops.squeeze(
      model.end_points['global_pool'], axis=[1, 2]))
  compute = tf.function(lambda images: tf.cast(
      feature_model(images, training=False), tf.float32))
  features, labels = [], []
  for images, batch_labels in dataset:
    features.append(compute(images).numpy())
    labels.append(batch_labels.numpy())
  return np.concatenate(features), np.concatenate(labels)


def run(session):
  """Scores the session's network by few-shot linear evaluation.

  Returns:
    {'<K>shot': top-1 averaged over the draws} for each K of
    --linear_eval_shots; also logged and recorded in metrics.jsonl.
  """
  config, source, model = session.config, session.source, session.model
  labels = np.asarray(source.train_labels if source.train_labels is not None
                      else [int(l) for _, l in
                            source.read('train', 1, 0).as_numpy_iterator()])
  shots = sorted(set(config.linear_eval_shots))
  orders = _chosen(labels, source.num_classes, shots, config.linear_eval_seeds)
  needed = np.unique(np.concatenate([order[:max(shots)] for draw in orders
                                     for order in draw]))
  position = {index: i for i, index in enumerate(needed)}
  preprocess = preprocessing.eval_fn(
      source.augment, config.image_size, source.encoded,
      config.eval_preprocessing, config.eval_crop_fraction,
      config.resize_method)
  keep = tf.constant(np.isin(np.arange(len(labels)), needed))

  def batches(dataset):
    return dataset.map(lambda image, label: (preprocess(image), label),
                       num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(
                           ).batch(config.batch_size).prefetch(tf.data.AUTOTUNE)

  train = source.read('train', 1, 0).enumerate().filter(
      lambda index, _: keep[index]).map(lambda _, example: example)
  with optimization.averaged_weights(model, session.optimizer):
    train_features, train_labels = _features(model, batches(train))
    eval_features, eval_labels = _features(
        model, batches(source.read('eval', 1, 0)))
  if len(train_features) != len(needed):
    raise DataError(f'{len(needed) - len(train_features)} of the chosen '
                    'training images do not decode; linear evaluation needs '
                    'them all.')
  results = {}
  for k in shots:
    scores = []
    for draw in orders:
      rows = [position[i] for order in draw for i in order[:k]]
      predict = ridge_classifier(train_features[rows], train_labels[rows],
                                 source.num_classes, config.linear_eval_l2)
      scores.append(float(np.mean(predict(eval_features) == eval_labels)))
    results[f'{k}shot'] = float(np.mean(scores))
    logging.info('linear eval, %d example(s) per class: top-1 %.2f%% (over %d '
                 'draws: %s) on %d images', k, 100 * results[f'{k}shot'],
                 len(scores), ', '.join(f'{100 * s:.2f}' for s in scores),
                 len(eval_labels))
  session.reporter.write('eval', session.step,
                         {f'linear_top1_{k}': v for k, v in results.items()})
  return results
