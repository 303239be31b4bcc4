"""The training state: everything a checkpoint must hold to resume exactly."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """step: optimizer steps taken; params and opt_state: pytrees.

    Data order and step RNGs are functions of (seed, step), so nothing else is
    needed to resume a run bit for bit.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    num_skipped: jax.Array  # updates skipped for a non-finite loss/gradient
    stream: Any = None      # streaming tasks: per-device state carried across steps,
                            # stacked (num_local_devices, ...) on the host


def create(params: Any, tx: optax.GradientTransformation, stream: Any = None) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      num_skipped=jnp.zeros((), jnp.int32), stream=stream)
