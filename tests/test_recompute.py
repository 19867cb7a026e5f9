"""Gradient recomputation gives the gradients and the state updates of a
normal step."""

import numpy as np
import pytest
import tensorflow as tf

import resnet_v2


def _state(model):
  """{name: variable} of all the model's state; the drop-path seeds (whose
  paths carry a process-wide counter) by their order."""
  seeds = iter(range(1000))
  return {f'seed {next(seeds)}' if v.path.endswith('seed_generator_state') else v.path: v
          for v in model.variables}


def _pair(blocks, **kwargs):
  """The same network with and without recomputation, with the same values."""
  plain, recomputed = (
      resnet_v2.build_model(resnet_v2.parse_blocks(blocks), 4, input_shape=(8, 8, 3),
                            stem='cifar', recompute_grad=recompute, **kwargs)
      for recompute in (False, True))
  rng = np.random.default_rng(0)
  for name, variable in _state(plain).items():
    if not name.startswith('seed'):
      variable.assign(rng.uniform(0.5, 1.5, variable.shape) if 'moving_variance' in name
                      else rng.normal(0, 0.3, variable.shape))
  values = {name: v.numpy() for name, v in _state(plain).items()}
  for name, variable in _state(recomputed).items():
    variable.assign(values.pop(name))
  assert not values
  return plain, recomputed


def _step(model):
  images = tf.constant(np.random.default_rng(1).normal(size=(6, 8, 8, 3)), tf.float32)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(model(images, training=True) ** 2)
    return tape.gradient(loss, model.trainable_variables)

  gradients = step()
  return ({v.path: g.numpy() for v, g in zip(model.trainable_variables, gradients)},
          {name: v.numpy() for name, v in _state(model).items()})


@pytest.mark.parametrize('blocks, kwargs', [
    ('4x2/2, 8x1', {}),
    ('basic 8x2/2, 4x1', dict(drop_path_rate=0.5)),
    ('basic 8x1/2, 4x1', dict(arg_sc=resnet_v2.bit_arg_scope(groups=2))),
])
def test_recomputed_gradients_and_state_equal_a_normal_step(blocks, kwargs):
  plain, recomputed = _pair(blocks, **kwargs)
  assert any(isinstance(l, resnet_v2.recompute.Recomputed) for l in recomputed.layers)
  gradients, state = _step(plain)
  gradients_again, state_again = _step(recomputed)
  assert gradients.keys() == gradients_again.keys()
  for path in gradients:
    np.testing.assert_allclose(gradients_again[path], gradients[path], rtol=1e-4, atol=1e-5,
                               err_msg=path)
  # BatchNorm's moving statistics moved once; the drop-path seeds advanced once.
  for path in state:
    np.testing.assert_allclose(state_again[path], state[path], rtol=1e-5, atol=1e-6,
                               err_msg=path)


def test_recomputed_units_keep_their_end_points_and_weights():
  plain, recomputed = _pair('4x2/2, 8x1')
  unit = 'resnet_v2/block1/unit_2/bottleneck_v2'
  assert unit in recomputed.end_points and f'{unit}/conv1' not in recomputed.end_points
  assert [v.path for v in recomputed.weights] == [v.path for v in plain.weights]
  images = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(recomputed(images, training=False), plain(images, training=False),
                             rtol=1e-5, atol=1e-6)


def test_the_backward_pass_runs_each_unit_again():
  counts = {}
  for recompute in (False, True):
    model = resnet_v2.build_model(resnet_v2.parse_blocks('4x2/2, 8x1'), 4, input_shape=(8, 8, 3),
                                  stem='cifar', recompute_grad=recompute)

    @tf.function
    def step(images):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(images, training=True))  # pylint: disable=cell-var-from-loop
      return tape.gradient(loss, model.trainable_variables)  # pylint: disable=cell-var-from-loop

    graph = step.get_concrete_function(tf.TensorSpec([2, 8, 8, 3])).graph
    convs = [op for op in graph.get_operations() if op.type == 'Conv2D']
    # Convolutions that wait for a gradient: the second runs. Were they free
    # to run early, graph optimisation would merge them with the first runs.
    counts[recompute] = (len(convs), sum(_waits_for_a_gradient(op) for op in convs))
  unit_convs = 3 + 3 + 4  # conv1-3 of three units, one shortcut conv (block2)
  assert counts[False] == (12, 0) and counts[True] == (12 + unit_convs, unit_convs)


def _waits_for_a_gradient(op):
  seen, stack = set(), [op]
  while stack:
    op = stack.pop()
    if op.type.endswith('Grad') or 'Backprop' in op.type:
      return True
    for parent in [t.op for t in op.inputs] + list(op.control_inputs):
      if parent.name not in seen:
        seen.add(parent.name)
        stack.append(parent)
  return False
