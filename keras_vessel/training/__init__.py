"""Training: a run config in, a run folder out (`train`), under any `tf.distribute` strategy.

- `keras_vessel.training.components`: what a config builds (network, optimizer, losses) and its checks
- `keras_vessel.training.strategy`: `make_strategy`, `split_cpu`
- `keras_vessel.training.step`: the distributed train/eval step, validation, the weight average
- `keras_vessel.training.run_folder`: `RunFolder`, the run's files and the resume check
- `keras_vessel.training.loop`: `train`
"""

from keras_vessel.errors import TrainingError
from keras_vessel.training.components import build_training_model, output_names, training_fov_diameter
from keras_vessel.training.loop import StepTiming, TrainResult, time_steps, train
from keras_vessel.training.run_folder import FINISHED_STATUSES, RunFolder
from keras_vessel.training.step import averaged_weights, build_steps, should_stop_early, validate
from keras_vessel.training.strategy import make_strategy, split_cpu

__all__ = [
    "FINISHED_STATUSES",
    "RunFolder",
    "StepTiming",
    "TrainResult",
    "TrainingError",
    "averaged_weights",
    "build_steps",
    "build_training_model",
    "make_strategy",
    "output_names",
    "should_stop_early",
    "split_cpu",
    "time_steps",
    "train",
    "training_fov_diameter",
    "validate",
]
