"""Config file for toy_cli.py: the toy task of tests/train/toy_task.py, run for 16 steps."""

import os
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS, "train"))

import toy_task  # noqa: E402


def get_config(arg=None):
    del arg
    return toy_task.get_config(**{"train.num_steps": 16})
