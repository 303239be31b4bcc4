"""The pure training step the trainer builds from a task's loss."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from rnnvision.train.norms import global_norm
from rnnvision.train.state import TrainState

# loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    clipper: optax.GradientTransformation, axis_name: str | None = None,
                    streaming: bool = False):
    """Returns `train_step(state, batch, rng) -> (state, metrics)`, pure and jit-able.

    With `axis_name` (inside pmap) gradients and metrics are averaged over the
    devices with `lax.pmean`. The update is applied only when the loss, the
    gradient, the update and the new parameters are all finite; otherwise the
    state is returned unchanged and `metrics["finite"]` is 0 (the host then
    stops, or with nonfinite="skip" counts the skip). `rng` is the run's base
    key; the step's key is derived from it and the step number, so a resumed
    run draws the same keys.

    With `streaming`, `loss_fn(params, batch, rng, state.stream)` returns
    `(loss, (metrics, new_stream))` and the new stream is kept in the state
    (also after a skipped update, so the stream stays aligned with the data).
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):  # raw key data (e.g. replicated)
            rng = jax.random.wrap_key_data(rng)
        rng = jax.random.fold_in(rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, lax.axis_index(axis_name))
        if streaming:
            grad_fn = jax.value_and_grad(lambda p: loss_fn(p, batch, rng, state.stream), has_aux=True)
            (loss, (aux, stream)), grads = grad_fn(state.params)
        else:
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
            stream = None
        if axis_name is not None:
            loss, aux, grads = lax.pmean((loss, aux, grads), axis_name)
        clipped, _ = clipper.update(grads, clipper.init(state.params), state.params)
        updates, opt_state = tx.update(clipped, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        grad_norm = optax.global_norm(grads)
        update_norm = optax.global_norm(updates)
        # A finite loss and gradient can still give a non-finite update or overflowing
        # parameters (huge learning rate, low precision): such a state is never kept,
        # so it can never be checkpointed.
        finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
                  & _all_finite(updates) & _all_finite(params))
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = TrainState(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            num_skipped=state.num_skipped + (~finite).astype(jnp.int32),
            stream=stream)
        clipped_norm = optax.global_norm(clipped)
        metrics = dict(aux, loss=loss, grad_norm=grad_norm, clipped_grad_norm=clipped_norm,
                       clipped=(clipped_norm < grad_norm * (1 - 1e-6)).astype(jnp.float32),
                       update_norm=update_norm,
                       param_norm=global_norm(new_state.params),  # no float32 overflow
                       finite=finite.astype(jnp.float32))
        return new_state, metrics

    return train_step


def _all_finite(tree) -> jax.Array:
    """True when every element of every leaf is finite (a norm could overflow first)."""
    leaves = jax.tree.leaves(tree)
    return jnp.stack([jnp.isfinite(x).all() for x in leaves]).all() if leaves else jnp.bool_(True)
