"""Experiments: absl-flag scripts that train, evaluate and export ResNet v2."""
