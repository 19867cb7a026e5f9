#!/usr/bin/env bash
# Runs one experiment on every host of a Cloud TPU VM (a single host or a pod
# slice), from this machine:
#
#   bash launch/tpu_vm.sh TPU_NAME ZONE -- \
#       python -m experiments.imagenet --strategy=tpu --tpu=TPU_NAME ...
#
# The same command runs on all hosts at once (gcloud ... ssh --worker=all);
# TensorFlow's TPUClusterResolver finds the slice's other hosts by itself.
#
# Assumes: on every host the project is checked out and installed (with
# `pip install -e '.[tpu]' -f ...`, see the README) in the same directory,
# PROJECT_DIR, relative to the login user's home (default: resnet-v2); `python`
# there is that environment (or give .venv/bin/python). --model_dir must be a
# gs:// bucket, which all hosts see. The command stops if the ssh sessions
# drop: for long runs, start it inside tmux or screen on the hosts instead.

set -euo pipefail

usage() {
  echo "usage: bash launch/tpu_vm.sh TPU_NAME ZONE -- COMMAND [ARGS...]" >&2
  exit 2
}

(( $# >= 3 )) || usage
tpu_name=$1
zone=$2
shift 2
[[ $1 == -- ]] && shift
(( $# > 0 )) || usage

# Quote the directory and each argument for the remote shell.
remote="cd $(printf '%q' "${PROJECT_DIR:-resnet-v2}") && $(printf '%q ' "$@")"

exec gcloud compute tpus tpu-vm ssh "${tpu_name}" --zone="${zone}" --worker=all \
  --command="${remote}"
