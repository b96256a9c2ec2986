"""Which `tf.distribute` strategy runs training, and what the machine can do.

`make_strategy` maps ``train.strategy`` (``auto``, ``one_device``,
``mirrored``, ``multi_worker``) to a strategy; `split_cpu` exposes a CPU as
several logical devices so mirrored training can be tried without GPUs.
"""

from __future__ import annotations

import logging
import os

import tensorflow as tf

from keras_vessel.config import ConfigError
from keras_vessel.errors import TrainingError
from keras_vessel.provenance import cpu_speed_flags

__all__ = ["is_chief", "make_strategy", "precision_policy", "split_cpu", "warn_if_precision_is_slow"]

logger = logging.getLogger(__name__)


def split_cpu(devices: int) -> None:
    """Expose the CPU as `devices` logical devices, so mirrored training runs without GPUs.

    Must happen before TensorFlow initialises its devices, i.e. first thing in a process.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
        )
    except RuntimeError as error:
        if len(tf.config.list_logical_devices("CPU")) != devices:
            raise TrainingError(
                f"train.cpu_devices={devices}: TensorFlow was already initialised in this process "
                f"({error}); set it in a fresh process"
            ) from error


def make_strategy(name: str, *, cpu_devices: int = 0) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy a config names; failures say what to fix."""
    if cpu_devices > 1:
        split_cpu(cpu_devices)
    try:
        if name == "auto":
            gpus = tf.config.list_logical_devices("GPU")
            return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
        if name == "one_device":
            device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
            return tf.distribute.OneDeviceStrategy(device)
        if name == "mirrored":
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            return tf.distribute.MirroredStrategy([device.name for device in devices])
        if name == "multi_worker":
            if "TF_CONFIG" not in os.environ:
                raise TrainingError(
                    "train.strategy=multi_worker needs the TF_CONFIG environment variable "
                    '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                    '"task": {"type": "worker", "index": 0}})'
                )
            return tf.distribute.MultiWorkerMirroredStrategy()
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        if isinstance(error, TrainingError):
            raise
        raise TrainingError(f"could not start the {name!r} strategy: {error}") from error
    raise ConfigError(f"train.strategy must be auto, one_device, mirrored or multi_worker, got {name!r}")


def precision_policy(mixed_precision: bool | str) -> str:
    """The Keras dtype policy of ``train.mixed_precision``: float32, mixed_bfloat16 or mixed_float16."""
    if mixed_precision is False:
        return "float32"
    return "mixed_float16" if mixed_precision == "float16" else "mixed_bfloat16"


def warn_if_precision_is_slow(policy: str) -> None:
    """Reduced precision without the hardware for it is emulated: say so before hours of slow training.

    bfloat16 without AVX-512-BF16/AMX (or a GPU) measured 20x slower than
    float32; float16 on a CPU has no fast kernels either.
    """
    if policy == "float32" or tf.config.list_logical_devices("GPU"):
        return
    flags = cpu_speed_flags()
    if policy == "mixed_float16":
        logger.warning("train.mixed_precision=float16 without a GPU: CPUs have no fast float16 kernels, "
                       "so this is slower than float32; use it on a GPU, or set train.mixed_precision=false")
    elif flags is not None and "avx512_bf16" not in flags and "amx_bf16" not in flags:
        logger.warning(
            "train.mixed_precision=bfloat16 on a CPU without avx512_bf16/amx_bf16: bfloat16 is emulated "
            "and about 20x slower than float32 here; set train.mixed_precision=false"
        )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True in the process that writes the run folder (the only one, or multi-worker's worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)
