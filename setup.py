"""resnet-v2: tf-slim's pre-activation ResNets on modern TensorFlow.

TensorFlow comes in wheels that must not be installed together (`tensorflow`,
`tensorflow-cpu`, `tensorflow-tpu` all provide the `tensorflow` package), so
it is not a base requirement: pick exactly one with an extra.

    pip install 'resnet-v2[cpu]'   # CPU only: the small tensorflow-cpu wheel
    pip install 'resnet-v2[gpu]'   # NVIDIA GPUs: tensorflow with its CUDA wheels
    pip install 'resnet-v2[tpu]' -f https://storage.googleapis.com/libtpu-tf-releases/index.html
    pip install resnet-v2          # TensorFlow already installed (e.g. a container)
"""

import setuptools

TENSORFLOW = '>=2.20,<3'

setuptools.setup(
    name='resnet-v2',
    version='0.1.0',
    description="tf-slim's pre-activation ResNets (He et al. 2016) on Keras 3, "
                'with tf.distribute training and SavedModel export.',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=setuptools.find_packages(include=['resnet_v2', 'resnet_v2.*',
                                               'experiments', 'experiments.*',
                                               'launch', 'launch.*']),
    install_requires=[
        'absl-py>=1.0',
        # Only `arg_scope`/`add_arg_scope` are used: slim's layers and nets
        # do not run on TensorFlow > 2.12.
        'tf-slim>=1.1,<2',
        'tensorflow-datasets>=4.9,<5',
        # tensorflow-datasets 4.9 imports it on every Python but declares it
        # only for Python < 3.9 (tensorflow/datasets#11212).
        'importlib_resources>=5',
        'numpy>=1.26',
        'tensorboard>=2.16',  # tf.summary needs it; TF 2.21 no longer pulls it in
        'pillow>=10',
        'scikit-learn>=1.3',  # its 8x8 digits are the embedded default data set
    ],
    extras_require={
        'cpu': [f'tensorflow-cpu{TENSORFLOW}'],
        'gpu': [f'tensorflow[and-cuda]{TENSORFLOW}'],
        'tpu': [f'tensorflow-tpu{TENSORFLOW}'],
        'test': ['pytest>=7', 'matplotlib>=3.7'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
