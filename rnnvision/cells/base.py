"""The cell interface: a frozen dataclass of hyper-parameters and pure functions.

Every recurrent cell in rnnvision is a `Cell`:

    cell = rnnvision.cells.get("lstm", hidden_size=256)
    params = cell.init(key, input_shape)         # input_shape: one step's features, e.g. (I,)
    carry = cell.initial_carry(params, x_shape)  # x_shape: one step's input with batch dims, (B, I)
    carry, y = cell.step(params, carry, x)       # one time step, pure

A cell splits `step` into two parts so the time loop can be fast without the
cell knowing about time:

    px = cell.project_inputs(params, x)          # the input-to-state map, any leading dims
    carry, y = cell.step_projected(params, carry, px)

`project_inputs` has no recurrent dependency, so `rnnvision.recurrence.unroll`
applies it to all T steps at once (one large matmul or convolution) and keeps
only `step_projected` inside `lax.scan`. A new cell that does not care about this
implements `step` and inherits the identity `project_inputs`.

dtype policy: parameters are stored in `param_dtype` (float32); matmuls and
convolutions run in `compute_dtype` (e.g. "bfloat16") with float32 accumulation;
gate non-linearities and the carry stay in float32 so long recurrences do not
drift.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
Params = Any  # a pytree of arrays (dicts of named weights for the built-in cells)
Carry = Any   # a pytree of arrays with leading batch dimensions

_INITIALIZERS: dict[str, Callable[..., Callable]] = {
    "orthogonal": jax.nn.initializers.orthogonal,
    "lecun_normal": jax.nn.initializers.lecun_normal,
    "glorot_uniform": jax.nn.initializers.glorot_uniform,
    "normal": lambda: jax.nn.initializers.normal(stddev=0.01),
}
COMPUTE_DTYPES = ("float32", "bfloat16", "float16", "float64")


def initializer(name: str, *, field: str) -> Callable:
    """The `jax.nn.initializers` function called `name`, returning float32 by default.

    Parameters are float32 (the dtype policy above) whatever `jax_enable_x64` says:
    jax's initializers default to float64 under x64.
    """
    if name not in _INITIALIZERS:
        raise ValueError(
            f"{field}={name!r} is not a known initializer; allowed: {sorted(_INITIALIZERS)}")
    init = _INITIALIZERS[name]()
    return lambda key, shape, dtype=jnp.float32: init(key, shape, dtype)


def check_positive_int(value: Any, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{field}={value!r} must be a positive integer")


@dataclasses.dataclass(frozen=True)
class Cell:
    """Base class of recurrent cells. Subclasses are frozen dataclasses.

    Attributes:
      compute_dtype: dtype of matmuls/convolutions ("float32" or "bfloat16", ...).
        Parameters stay float32, accumulation and the carry are float32.
    """

    compute_dtype: str = "float32"

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype={self.compute_dtype!r}; allowed: {COMPUTE_DTYPES}")
        self.validate()

    def validate(self) -> None:
        """Checks hyper-parameters; raises ValueError naming the field."""

    # -- the interface --------------------------------------------------------
    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        raise NotImplementedError

    def initial_carry(self, params: Params, x_shape: Sequence[int]) -> Carry:
        raise NotImplementedError

    def project_inputs(self, params: Params, x: Array) -> Any:
        """Input-to-state part of a step, for inputs with any leading dims."""
        return x

    def step_projected(self, params: Params, carry: Carry, px: Any) -> tuple[Carry, Array]:
        """One step given `project_inputs(params, x)`; default calls `step`."""
        if type(self).step is Cell.step:
            raise NotImplementedError(f"{type(self).__name__} must define step or step_projected")
        return self.step(params, carry, px)

    def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        """One time step: x (*batch, *features) -> (new carry, output)."""
        return self.step_projected(params, carry, self.project_inputs(params, x))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of one step's output `y` (without batch dims)."""
        input_shape = tuple(int(d) for d in input_shape)
        params = jax.eval_shape(lambda k: self.init(k, input_shape), jax.random.key(0))
        x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
        carry = jax.eval_shape(lambda p: self.initial_carry(p, x.shape), params)
        _, y = jax.eval_shape(self.step, params, carry, x)
        return tuple(y.shape[1:])

    # -- helpers for subclasses -------------------------------------------------
    @property
    def dtype(self) -> jnp.dtype:
        return jnp.dtype(self.compute_dtype)

    @property
    def accum_dtype(self) -> jnp.dtype:
        """float32, or float64 when compute_dtype is float64 (never narrower than compute)."""
        return jnp.promote_types(jnp.float32, self.dtype)

    def matmul(self, x: Array, w: Array) -> Array:
        """x @ w in compute_dtype with float32 (float64 for float64) accumulation and result."""
        return jnp.matmul(x.astype(self.dtype), w.astype(self.dtype),
                          preferred_element_type=self.accum_dtype).astype(
                              jnp.promote_types(self.accum_dtype, x.dtype))

    def hparams(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
