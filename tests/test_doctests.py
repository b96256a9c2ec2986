"""The examples in the docstrings run and say what they show."""

import doctest
import importlib

import pytest

MODULES = ["keras_vessel.checks", "keras_vessel.config", "keras_vessel.data.scaling",
           "keras_vessel.evaluation.thresholds", "keras_vessel.measure.morphology", "keras_vessel.training.finetune",
           "keras_vessel_cli.options"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failed == 0
