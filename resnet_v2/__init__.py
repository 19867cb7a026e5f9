"""resnet_v2: tf-slim's pre-activation ResNets on Keras 3 layers.

    import keras
    import resnet_v2

    inputs = keras.Input((224, 224, 3))
    with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
      net, end_points = resnet_v2.resnet_v2_50(inputs, num_classes=1001)
    model = keras.Model(inputs, net)

or, in one call, `model = resnet_v2.build_model(50, num_classes=1001)`; a
pretrained network of any family, with its published weights:
`resnet_v2.create_model('bit_r50x1', 10, pretrained=True)` (fetched once
into a cache, `weight_cache`) or, from a file of yours,
`resnet_v2.create_model('bit_r50x1', 10, checkpoint_path='BiT-M-R50x1.npz')`.
"""

try:
  import tensorflow  # pylint: disable=unused-import
except ImportError as e:
  raise ImportError(
      "resnet_v2 needs TensorFlow, which is installed with an extra: "
      "pip install 'resnet-v2[cpu]' (CPU), 'resnet-v2[gpu]' (NVIDIA GPUs) or "
      "'resnet-v2[tpu]' (Cloud TPU VMs).") from e

from tf_slim.ops.arg_scope import add_arg_scope
from tf_slim.ops.arg_scope import arg_scope

from resnet_v2.arg_scopes import bit_arg_scope
from resnet_v2.arg_scopes import resnet_arg_scope
from resnet_v2.backbones import backbone
from resnet_v2.block_text import format_blocks
from resnet_v2.block_text import parse_blocks
from resnet_v2.checkpoints import load_slim_checkpoint
from resnet_v2.checkpoints import load_weights
from resnet_v2.layers import batch_norm
from resnet_v2.layers import conv2d
from resnet_v2.layers import group_norm
from resnet_v2.layers import max_pool2d
from resnet_v2.layers import norm_activation
from resnet_v2.models import build_model
from resnet_v2.models import layer_table
from resnet_v2.models import resolve_network
from resnet_v2.models import using_dtype_policy
from resnet_v2.nets import blocks_for_depth
from resnet_v2.nets import cifar_blocks
from resnet_v2.nets import register_depth
from resnet_v2.nets import registered_depths
from resnet_v2.nets import resnet_v2
from resnet_v2.nets import resnet_v2_101
from resnet_v2.nets import resnet_v2_152
from resnet_v2.nets import resnet_v2_18
from resnet_v2.nets import resnet_v2_200
from resnet_v2.nets import resnet_v2_34
from resnet_v2.nets import resnet_v2_50
from resnet_v2.nets import resnet_v2_basic_block
from resnet_v2.nets import resnet_v2_block
from resnet_v2 import weight_cache
from resnet_v2.pretrained import create_model
from resnet_v2.pretrained import get_model_spec
from resnet_v2.pretrained import list_models
from resnet_v2.pretrained import ModelSpec
from resnet_v2.pretrained import Preprocessing
from resnet_v2.pretrained import register_model
from resnet_v2.resnet_utils import Block
from resnet_v2.resnet_utils import conv2d_same
from resnet_v2.resnet_utils import FeatureLevel
from resnet_v2.resnet_utils import scale_width
from resnet_v2.resnet_utils import stack_blocks_dense
from resnet_v2.resnet_utils import subsample
from resnet_v2.resnet_utils import with_stochastic_depth
from resnet_v2.scopes import variable_scope
from resnet_v2.stems import register_stem
from resnet_v2.stems import STEMS
from resnet_v2.units import basic
from resnet_v2.units import bottleneck
from resnet_v2.weight_files import open_weights
