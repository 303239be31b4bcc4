"""Contract checks for recurrent cells, for the tests of anyone adding a cell.

    from rnnvision import testing

    def test_my_cell():
        testing.check_cell(MyCell(hidden_size=8), input_shape=(3,))

`check_cell` runs one cell through everything the rest of rnnvision assumes of
it (see `rnnvision.cells.base`): shapes and dtypes, purity under `jit`,
`step == step_projected . project_inputs`, `recurrence.unroll` against a Python
loop, `vmap`, and gradients against finite differences in float64. It returns
nothing and raises AssertionError saying which property broke.

Shape legend: B batch, T time, F... one step's features (`input_shape`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import test_util

from rnnvision.cells.base import Cell
from rnnvision.recurrence import unroll

# Tolerances of the float comparisons (two traces of step, unroll vs loop, ...), by
# compute dtype: the two sides may accumulate in different orders (one matmul
# over all T steps vs T small ones), which bfloat16 inputs amplify.
_TOLERANCE = {"float32": 1e-5, "float64": 1e-10, "bfloat16": 2e-2, "float16": 2e-2}


def check_cell(cell: Cell, input_shape: Sequence[int], batch: int = 2, steps: int = 5, *,
               seed: int = 0, tolerance: float | None = None, check_gradients: bool = True) -> None:
    """Asserts that `cell` honours the Cell contract on inputs of one step's shape `input_shape`.

    Args:
      cell: the cell to check (any compute_dtype; gradients are checked on a
        float64 copy of it, see `with_compute_dtype`).
      input_shape: one step's features F..., e.g. (I,) or (H, W, C).
      batch: B of the test inputs.
      steps: T of the unroll and gradient checks.
      seed: seeds the parameters (through `prng_key`) and the random inputs.
      tolerance: rtol and atol of the value comparisons; by default set from
        cell.compute_dtype (1e-5 for float32, 2e-2 for bfloat16).
      check_gradients: run the (slowest) finite-difference check.

    Raises:
      AssertionError: naming the property that does not hold.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if batch < 1 or steps < 1:
        raise ValueError(f"check_cell needs batch >= 1 and steps >= 1; got {batch}, {steps}")
    tol = _TOLERANCE.get(cell.compute_dtype, 1e-5) if tolerance is None else tolerance
    name = f"{type(cell).__name__}(compute_dtype={cell.compute_dtype!r})"
    # Inputs come from NumPy: JAX random numbers cost a compilation per shape.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *input_shape), np.float32)
    xs = rng.standard_normal((batch, steps, *input_shape), np.float32)

    _check_hashable(cell, name)
    params = cell.init(prng_key(seed), input_shape)
    _check_params(params, name)
    carry = cell.initial_carry(params, x.shape)
    _check_step_shapes(cell, params, carry, x.shape, input_shape, name)
    # jit with the cell as a static argument, as a user's training step would.
    step = functools.partial(jax.jit(type(cell).step, static_argnums=0), cell)
    with jax.checking_leaks():  # a tracer stored on the cell or a global raises here
        carry, y = step(params, carry, x)
    # From here on the carry is one step old, not all zeros, so every term counts.
    for path, leaf in zip(*_paths_and((carry, y))):
        assert np.all(np.isfinite(leaf)), f"{name}: (carry, y){path} after one step is not finite"
    _assert_trees_close(step(params, carry, x), step(params, carry, x), 0.0,
                        f"{name}: two identical calls of jit(step) differ")
    _check_equivalent_forms(cell, step, params, carry, xs, tol, name)
    if check_gradients:
        _check_gradients(cell, params, carry, xs, name)


# -- the individual checks ----------------------------------------------------

def _check_hashable(cell: Cell, name: str) -> None:
    # jit takes cells as static arguments and caches by (hash, ==): a cell must be
    # a frozen dataclass of hashable hyper-parameters (tuples, not lists).
    assert dataclasses.is_dataclass(cell) and type(cell).__dataclass_params__.frozen, (
        f"{name}: a cell must be a frozen dataclass (@dataclasses.dataclass(frozen=True))")
    try:
        hash(cell)
    except TypeError as e:
        raise AssertionError(f"{name}: cell is not hashable ({e}); use tuples, not lists, "
                             "for sequence hyper-parameters") from e
    assert dataclasses.replace(cell) == cell, f"{name}: a copy of the cell does not compare equal"


def _check_params(params: Any, name: str) -> None:
    assert jax.tree.leaves(params), f"{name}: init returned no parameters"
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        where = jax.tree_util.keystr(path)
        assert isinstance(leaf, (jax.Array, np.ndarray)), (
            f"{name}: parameter {where} is a {type(leaf).__name__}, expected an array")
        # dtype policy (rnnvision.cells.base): parameters are stored in float32.
        assert leaf.dtype == jnp.float32, (
            f"{name}: parameter {where} has dtype {leaf.dtype}, expected float32")
        assert np.all(np.isfinite(leaf)), f"{name}: parameter {where} is not finite at init"


def _check_step_shapes(cell, params, carry, x_shape, input_shape, name) -> None:
    """initial_carry -> step: batch dims, an unchanged carry type, y of output_shape."""
    batch = x_shape[0]
    for path, leaf in jax.tree_util.tree_leaves_with_path(carry):
        where = f"initial_carry(...){jax.tree_util.keystr(path)}"
        assert leaf.shape[:1] == (batch,), (
            f"{name}: {where} has shape {leaf.shape}; expected leading batch dim {batch}")
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32, (
                f"{name}: {where} has dtype {leaf.dtype}; the carry stays float32 "
                "whatever compute_dtype")
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    new_carry, y = jax.eval_shape(cell.step, params, carry, x)  # shapes only, no compilation
    # lax.scan needs the carry it gets back to have the type it passed in.
    assert jax.tree.structure(new_carry) == jax.tree.structure(carry), (
        f"{name}: step changed the carry's structure: {jax.tree.structure(carry)} -> "
        f"{jax.tree.structure(new_carry)}")
    for path, old, new in zip(*_paths_and(carry, new_carry)):
        assert (old.shape, old.dtype) == (new.shape, new.dtype), (
            f"{name}: step changed carry{path} from {old.shape} {old.dtype} "
            f"to {new.shape} {new.dtype}")
    expected = (batch, *cell.output_shape(input_shape))
    assert y.shape == expected, (
        f"{name}: step output y has shape {y.shape}; output_shape says {expected}")


# What is wrong when the pairs of _equivalent_forms differ, in its order.
_FORMS = ("step_projected(project_inputs(x)) differs from step(x)",
          "recurrence.unroll differs from a Python loop of step",
          "vmap(step) over an extra batch axis differs from stepping each slice")


def _equivalent_forms(cell, params, carry, xs):
    """Pairs (computed, reference) that must agree, built in one jit (one compilation).

    xs (B, T, *F), T >= 1. Returns (step(carry, xs[:, 0]) traced afresh,
    a tuple of pairs as listed in _FORMS).
    """
    step = functools.partial(cell.step, params)
    carries, ys = [carry], []
    for t in range(xs.shape[1]):
        c, y = step(carries[-1], xs[:, t])
        carries.append(c)
        ys.append(y)
    first = (carries[1], ys[0])
    split = cell.step_projected(params, carry, cell.project_inputs(params, xs[:, 0]))
    unrolled = unroll(cell, params, carry, xs)
    # vmap over the time axis as an extra batch axis: its slices are the loop's
    # steps, so vmap gets distinct carries and inputs at no extra compile cost.
    vmapped = jax.vmap(step, in_axes=(0, 1))(_stack(carries[:-1]), xs)
    return first, ((split, first),
                   (unrolled, (carries[-1], jnp.stack(ys, axis=1))),
                   (vmapped, (_stack(carries[1:]), jnp.stack(ys))))


def _check_equivalent_forms(cell, step, params, carry, xs, tol, name) -> None:
    """step: check_cell's jit(step), traced once already."""
    first, pairs = jax.jit(functools.partial(_equivalent_forms, cell))(params, carry, xs)
    # Python state that step reads or changes (a counter on the cell, a global) is
    # baked into each trace, so a second trace would differ from the first.
    _assert_trees_close(first, step(params, carry, xs[:, 0]), tol,
                        f"{name}: a second trace of step differs from the first: "
                        "does step read or change Python state?")
    for message, (computed, reference) in zip(_FORMS, pairs):
        _assert_trees_close(computed, reference, tol, f"{name}: {message}")


def _check_gradients(cell, params, carry, xs, name) -> None:
    """Reverse-mode gradients of unroll in float64 against finite differences.

    `jax.test_util.check_grads` contracts the outputs with random cotangents and
    compares the vjp with a central difference along a random direction. It runs
    on one flat float64 vector of (params, carry, xs) so that its own eager
    arithmetic compiles for one shape, not for every leaf.
    """
    # float64 only inside this context (jax.enable_x64 is what was
    # jax.experimental.enable_x64): the caller's dtype config is untouched.
    with jax.enable_x64(True):
        cell64 = with_compute_dtype(cell, "float64")
        flat, unflatten = _ravel_floats((params, carry, xs))

        @jax.jit
        def f(v):
            c, ys = unroll(cell64, *unflatten(v))
            return jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves((c, ys))])

        try:
            test_util.check_grads(f, (flat,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)
        except AssertionError as e:
            raise AssertionError(f"{name}: gradients of unroll disagree with finite "
                                 f"differences (float64):\n{e}") from e


# -- helpers --------------------------------------------------------------------

def prng_key(seed: int = 0) -> jax.Array:
    """A PRNG key for tests: the "rbg" implementation.

    Its random-number kernels compile several times faster on CPU than the
    default threefry (seconds per parameter shape, under a loaded machine),
    and the checks do not care which random numbers they get.
    """
    return jax.random.key(seed, impl="rbg")


def with_compute_dtype(cell: Cell, dtype: str) -> Cell:
    """A copy of `cell`, and of any cells inside it (StackedCell.cells), computing in `dtype`."""
    changes = {}
    for field in dataclasses.fields(cell):
        value = getattr(cell, field.name)
        if isinstance(value, Cell):
            changes[field.name] = with_compute_dtype(value, dtype)
        elif isinstance(value, tuple) and value and all(isinstance(v, Cell) for v in value):
            changes[field.name] = tuple(with_compute_dtype(v, dtype) for v in value)
    return dataclasses.replace(cell, compute_dtype=dtype, **changes)


def _stack(trees: Sequence[Any]) -> Any:
    """Stacks the leaves of equally structured pytrees on a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _ravel_floats(tree: Any) -> tuple[np.ndarray, Any]:
    """(float64 NumPy vector of the floating leaves, function vector -> tree).

    Integer leaves are kept as they are (not differentiated).
    """
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [np.asarray(leaf) for leaf in leaves]
    is_float = [np.issubdtype(leaf.dtype, np.floating) for leaf in leaves]
    flat = np.concatenate([l.ravel() for l, f in zip(leaves, is_float) if f]).astype(np.float64)

    def unflatten(v):
        out, start = [], 0
        for leaf, f in zip(leaves, is_float):
            if f:
                out.append(v[start:start + leaf.size].reshape(leaf.shape))
                start += leaf.size
            else:
                out.append(leaf)
        return jax.tree.unflatten(treedef, out)

    return flat, unflatten


def _paths_and(*trees):
    """([keystr of each leaf], leaves of tree 0, leaves of tree 1, ...)."""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(trees[0])]
    return (paths, *(jax.tree.leaves(t) for t in trees))


def _assert_trees_close(actual, expected, tol: float, message: str) -> None:
    if jax.tree.structure(actual) != jax.tree.structure(expected):
        raise AssertionError(f"{message}: structures differ: {jax.tree.structure(actual)} vs "
                             f"{jax.tree.structure(expected)}")
    for path, a, b in zip(*_paths_and(actual, expected)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise AssertionError(f"{message}: {path} has shape {a.shape} vs {b.shape}")
        try:
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        except AssertionError as e:
            raise AssertionError(f"{message}: at {path or 'output'}\n{e}") from None
