"""Our lstm / gru / conv_lstm equal flax.linen's cells given the same weights.

Each test takes random weights in flax's layout (names and shapes from
`jax.eval_shape(flax_cell.init, ...)`, so no flax initialisation is compiled),
maps them into our fused layout, and compares T steps of flax's cell (a Python
loop of `apply`) with `rnnvision.recurrence.unroll`, from a random initial carry.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnnvision import cells
from rnnvision.cells.lstm import LSTMCarry
from rnnvision.recurrence import unroll
from rnnvision.testing import prng_key

B, T = 2, 5
RNG = np.random.default_rng(0)


def _random_like(tree):
    """Random normal arrays (scaled so gates do not saturate) shaped like `tree`'s leaves."""
    return jax.tree.map(lambda s: (0.5 * RNG.standard_normal(s.shape)).astype(np.float32), tree)


def _flax_params(flax_cell, carry, x):
    shapes = jax.eval_shape(flax_cell.init, prng_key(0), carry, x)["params"]
    return _random_like(shapes)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run_both(flax_cell, cell, flax_params, params, carry, xs):
    """(flax's final carry and ys, ours), each from `carry` over xs (B, T, *F)."""
    c, ys = carry, []
    for t in range(xs.shape[1]):
        c, y = flax_cell.apply({"params": flax_params}, c, xs[:, t])
        ys.append(y)
    ours = unroll(cell, params, LSTMCarry(*carry) if isinstance(carry, tuple) else carry, xs)
    return (tuple(c) if isinstance(c, tuple) else c, jnp.stack(ys, axis=1)), ours


def _assert_same(flax_out, ours):
    (c_flax, ys_flax), (c_ours, ys_ours) = flax_out, ours
    np.testing.assert_allclose(ys_ours, ys_flax, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(c_ours), jax.tree.leaves(c_flax)):  # (c, h) in both
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_lstm_equals_flax_lstm_cell():
    size_in, h = 3, 4
    flax_cell = nn.LSTMCell(features=h)
    carry = tuple(_random_like(jax.ShapeDtypeStruct((B, h), jnp.float32)) for _ in "ch")
    xs = RNG.standard_normal((B, T, size_in)).astype(np.float32)
    p = _flax_params(flax_cell, carry, xs[:, 0])
    # flax: one Dense per gate, named i<gate> (input, no bias) and h<gate> (hidden,
    # with the bias); gate order i, f, g, o as ours. Ours fuses the gates.
    gates = "ifgo"
    params = {
        "w_x": np.concatenate([p[f"i{g}"]["kernel"] for g in gates], axis=1),
        "w_h": np.concatenate([p[f"h{g}"]["kernel"] for g in gates], axis=1),
        "b": np.concatenate([p[f"h{g}"]["bias"] for g in gates]),
    }
    _assert_same(*_run_both(flax_cell, cells.get("lstm", hidden_size=h), p, params, carry, xs))


def test_gru_equals_flax_gru_cell():
    size_in, h = 3, 4
    flax_cell = nn.GRUCell(features=h)
    carry = _random_like(jax.ShapeDtypeStruct((B, h), jnp.float32))
    xs = RNG.standard_normal((B, T, size_in)).astype(np.float32)
    p = _flax_params(flax_cell, carry, xs[:, 0])
    # flax: input Denses ir, iz, in with biases; hidden Denses hr, hz without and
    # hn with a bias (it sits inside r * (h W_hn + b_hn), as our b_h's n block).
    gates = "rzn"
    params = {
        "w_x": np.concatenate([p[f"i{g}"]["kernel"] for g in gates], axis=1),
        "w_h": np.concatenate([p[f"h{g}"]["kernel"] for g in gates], axis=1),
        "b_x": np.concatenate([p[f"i{g}"]["bias"] for g in gates]),
        "b_h": np.concatenate([np.zeros(2 * h, np.float32), p["hn"]["bias"]]),
    }
    _assert_same(*_run_both(flax_cell, cells.get("gru", hidden_size=h), p, params, carry, xs))


def test_conv_lstm_equals_flax_conv_lstm_cell():
    image, f, kernel = (5, 6, 2), 3, (3, 5)  # a non-square kernel catches a kh/kw swap
    flax_cell = nn.ConvLSTMCell(features=f, kernel_size=kernel)  # padding "SAME"
    carry = tuple(_random_like(jax.ShapeDtypeStruct((B, *image[:2], f), jnp.float32)) for _ in "ch")
    xs = RNG.standard_normal((B, T, *image)).astype(np.float32)
    p = _flax_params(flax_cell, carry, xs[:, 0])
    # flax differs from ours in three ways: its gate order is i, g, f, o (ours i, f, g, o);
    # both of its convolutions have a bias (ours one, the sum); and it adds a
    # constant 1 to the forget pre-activation at every step (ours keeps the
    # forget bias in b, initialised to 1). flax pads its state convolution like
    # its input one; ours always uses "SAME" there, so only "SAME" inputs compare.
    def to_ifgo(a):
        i, g, f_, o = np.split(a, 4, axis=-1)
        return np.concatenate([i, f_, g, o], axis=-1)

    b = to_ifgo(p["ih"]["bias"] + p["hh"]["bias"])
    b[f:2 * f] += 1.0
    params = {"w_x": to_ifgo(p["ih"]["kernel"]), "w_h": to_ifgo(p["hh"]["kernel"]), "b": b}
    cell = cells.get("conv_lstm", features=f, kernel_size=kernel, padding="SAME")
    _assert_same(*_run_both(flax_cell, cell, p, params, carry, xs))
