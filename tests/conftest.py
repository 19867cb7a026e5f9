"""Test set-up: quiet TensorFlow, a fresh Keras state per test."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top


@pytest.fixture(autouse=True)
def _fresh_keras():
  keras.config.set_dtype_policy('float32')
  keras.utils.clear_session()
  yield
