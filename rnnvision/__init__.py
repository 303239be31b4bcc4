"""rnnvision: recurrent sequence models for computer vision in JAX/Flax."""

from rnnvision import cells, recurrence

__version__ = "0.1.0"
