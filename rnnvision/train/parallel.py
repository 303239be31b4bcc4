"""Data parallelism: sharded `jax.jit` over a device mesh (default) or `jax.pmap`.

Both modes split the config's global batch first across processes (each process
loads only its rows, `process_rows`), then across devices; parameters and optimizer
state are replicated, and the gradient is that of the mean loss over the global
batch (all devices of all hosts). `train.parallel` picks the mode (`make`):

  "jit"   `ShardedJit`. A `jax.sharding.Mesh` over all devices of all processes with
          one axis, "batch". A batch is one global array sharded over it
          (PartitionSpec("batch"): rows split across devices; on several hosts each
          process contributes its rows through `jax.make_array_from_process_local_data`);
          the state is replicated (PartitionSpec()). The step is written for the global
          batch, and XLA's SPMD partitioner splits the work and inserts the gradient
          all-reduce. Its random key is one key for the whole batch, so with JAX's
          partitionable threefry (the default) random draws do not depend on the
          device count.
  "pmap"  `PmapParallel`. `jax.pmap` over the local devices, arrays stacked on a leading
          device axis; gradients and metrics averaged with `lax.pmean`; each device
          folds its index into the step's key.

Streaming tasks (Capability.STREAMING) keep one state per device, stacked
(D, per-device batch, ...) on the host and in checkpoints, the same in both modes. Under
"jit" that axis is sharded over the mesh and the step is `jax.vmap`ped over it with
the axis name "batch": each group of B / D rows with its own state and key, means over
the groups with `lax.pmean`, the computation pmap runs.

Adding a model axis later: build the mesh from the devices reshaped to (data, model)
with axes ("batch", "model"); batches keep PartitionSpec("batch"); `state_sharding`
gives each parameter (and its optimizer moments) a PartitionSpec over "model" in place
of PartitionSpec(); the step needs no change (the partitioner inserts the collectives
the shardings imply); `host_state` then gathers the sharded leaves
(`jax.experimental.multihost_utils.process_allgather`) instead of reading one replica.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnnvision.config_checks import ConfigError

AXIS = "batch"
MODES = ("jit", "pmap")

# step_fn(state, batch, rng) -> (state, metrics); record(buffer, step, metrics) -> buffer
StepFn = Callable[[Any, dict, jax.Array], tuple[Any, dict]]
Record = Callable[[jax.Array, jax.Array, dict], jax.Array]


def initialize_distributed(dist_cfg) -> None:
    """Calls `jax.distributed.initialize` when the config asks for it.

    Empty/unset fields are left to JAX, which reads them from the cluster
    environment (SLURM, TPU pods, or JAX_COORDINATOR_ADDRESS & co).
    """
    if not dist_cfg.initialize:
        return
    kwargs = {}
    if dist_cfg.coordinator_address:
        kwargs["coordinator_address"] = dist_cfg.coordinator_address
    if dist_cfg.num_processes > 0:
        kwargs["num_processes"] = dist_cfg.num_processes
    if dist_cfg.process_id >= 0:
        kwargs["process_id"] = dist_cfg.process_id
    if dist_cfg.cpu_collectives:  # CPU-only clusters (and the multi-process test) need gloo
        jax.config.update("jax_cpu_collectives_implementation", dist_cfg.cpu_collectives)
    jax.distributed.initialize(**kwargs)


def make(mode: str) -> "ShardedJit | PmapParallel":
    """The data-parallel placement of `train.parallel` ("jit" or "pmap")."""
    if mode == "jit":
        return ShardedJit()
    if mode == "pmap":
        return PmapParallel()
    raise ConfigError("train.parallel", mode, f"one of {MODES}")


def _placement(sharding: NamedSharding) -> Callable:
    """`place(tree of numpy) -> tree of arrays with `sharding`: the identity, jitted.

    jit's C++ dispatch transfers numpy arguments straight to their in_shardings, for a
    fraction of `jax.device_put`'s host time (a two-array row-MNIST batch on a 2-core
    CPU: ~20 against ~90 us of CPU), time the prefetch thread would hold the GIL.
    """
    return jax.jit(lambda tree: tree, in_shardings=sharding, out_shardings=sharding)


def _pad_rows(batch: dict, multiple: int) -> tuple[dict, int]:
    """Pads every leaf's rows (repeating the last) to a multiple; returns (batch, rows)."""
    size = len(next(iter(jax.tree.leaves(batch))))
    pad = -size % multiple
    padded = jax.tree.map(
        lambda x: np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else np.asarray(x), batch)
    return padded, size


class DataParallel:
    """The device topology, and what both modes share (host-side helpers)."""

    mode = ""

    def __init__(self):
        self.devices = jax.local_devices()
        self.num_local = len(self.devices)
        self.num_global = jax.device_count()
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()

    def process_rows(self, global_batch_size: int) -> slice:
        """The rows of the global batch this process loads."""
        per_process = global_batch_size // self.process_count
        start = self.process_index * per_process
        return slice(start, start + per_process)

    def stack_per_device(self, tree: Any) -> Any:
        """The same value for every local device, stacked on a leading axis (host numpy)."""
        return jax.tree.map(lambda x: np.stack([np.asarray(x)] * self.num_local), tree)

    def step_axis(self, streaming: bool) -> str | None:
        """The axis name the train step averages over (None: the step sees the global batch)."""
        return AXIS


class ShardedJit(DataParallel):
    """Sharded `jax.jit` over a one-axis mesh of all devices (see the module docstring)."""

    mode = "jit"

    def __init__(self):
        super().__init__()
        # Devices ordered by process, so each process's devices hold a contiguous block of
        # rows: the block `process_rows` gives it.
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(AXIS))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        local_mesh = Mesh(np.array(self.devices), (AXIS,))  # evaluation: this process only
        self._local_rows = NamedSharding(local_mesh, PartitionSpec(AXIS))
        self._local_replicated = NamedSharding(local_mesh, PartitionSpec())
        self._place_rows = _placement(self.batch_sharding)

    def step_axis(self, streaming: bool) -> str | None:
        return AXIS if streaming else None  # streaming: the vmap axis of `_per_group`

    def _global(self, x: np.ndarray, sharding: NamedSharding) -> jax.Array:
        if self.process_count == 1:
            return jax.device_put(x, sharding)
        if sharding is self.replicated:
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
        return jax.make_array_from_process_local_data(sharding, x)

    def put_batch(self, batch: dict) -> dict:
        """This process's rows (B_local, ...) -> global arrays (B, ...) sharded by rows."""
        if self.process_count == 1:
            return self._place_rows(batch)
        return jax.tree.map(lambda x: self._global(np.asarray(x), self.batch_sharding), batch)

    def replicate(self, tree: Any) -> Any:
        """Host values -> global arrays replicated on every device."""
        return jax.tree.map(lambda x: self._global(np.asarray(x), self.replicated),
                            jax.device_get(tree))

    @staticmethod
    def read(tree: Any) -> Any:
        """Replicated arrays -> numpy (this process's first copy; no communication)."""
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

    def state_sharding(self, state: Any) -> Any:
        """The TrainState's shardings: replicated, except `stream`, split by its device axis."""
        stream = jax.tree.map(lambda _: self.batch_sharding, state.stream)
        return jax.tree.map(lambda _: self.replicated, state.replace(stream=None)).replace(
            stream=stream)

    def place_state(self, state: Any) -> Any:
        """Host TrainState -> devices: replicated, except `stream` (one entry per device)."""
        stream = None if state.stream is None else self.put_batch(state.stream)
        return self.replicate(state.replace(stream=None)).replace(stream=stream)

    def host_state(self, state: Any) -> Any:
        """Devices -> host TrainState (numpy): one copy, `stream` with its device axis."""
        stream = None if state.stream is None else jax.device_get(state.stream)
        return self.read(state.replace(stream=None)).replace(stream=stream)

    host_params = read

    def _per_group(self, step_fn: StepFn) -> StepFn:
        """A streaming step over the global batch: vmapped over D groups of rows, each
        with its own stream (the stream's leading axis) and key."""
        groups = self.num_global
        group_rows = NamedSharding(self.mesh, PartitionSpec(AXIS))

        def grouped(state, batch, rng):
            split = lambda x: jax.lax.with_sharding_constraint(
                x.reshape((groups, -1) + x.shape[1:]), group_rows)
            axes = state.replace(step=None, params=None, opt_state=None, num_skipped=None,
                                 stream=0)
            return jax.vmap(step_fn, in_axes=(axes, 0, None), out_axes=(axes, None),
                            axis_name=AXIS)(state, jax.tree.map(split, batch), rng)

        return grouped

    def _mapped(self, step_fn: StepFn, streaming: bool) -> StepFn:
        return self._per_group(step_fn) if streaming else step_fn

    def metric_shapes(self, step_fn: StepFn, streaming: bool, state, batch, rng) -> dict:
        """{name: ShapeDtypeStruct} of one step's metrics (traced, not compiled)."""
        return jax.eval_shape(self._mapped(step_fn, streaming), state, batch, rng)[1]

    def compile_train_step(self, step_fn: StepFn, streaming: bool, record: Record,
                           state: Any) -> Callable:
        """`run(state, buffer, batch, rng) -> (state, buffer, done)`, state and buffer donated.

        The metrics of each step go into `buffer` through `record`; `done` is the new
        step count, a small array to wait on.
        """
        mapped = self._mapped(step_fn, streaming)

        def run(state, buffer, batch, rng):
            state, metrics = mapped(state, batch, rng)
            return state, record(buffer, state.step, metrics), state.step

        shardings = (self.state_sharding(state), self.replicated, self.replicated)
        return jax.jit(run, out_shardings=shardings, donate_argnums=(0, 1))

    def make_apply(self) -> Callable:
        """`apply(fn, params, batch)`: fn(params, batch) jitted on this process's devices.

        params are host values; the batch (any size) is padded to a multiple of the local
        device count and sharded by rows; the outputs are numpy without the padding.
        Compiled functions are cached per `fn`, the placed params per params object.
        """
        cache: dict[Callable, Callable] = {}
        placed: dict[int, Any] = {}

        def apply(fn: Callable, params: Any, batch: dict) -> Any:
            if fn not in cache:
                cache[fn] = jax.jit(fn)
            if id(params) not in placed:
                placed.clear()
                placed[id(params)] = (params, jax.device_put(jax.device_get(params),
                                                             self._local_replicated))
            padded, size = _pad_rows(batch, self.num_local)
            out = cache[fn](placed[id(params)][1], jax.device_put(padded, self._local_rows))
            return jax.tree.map(lambda y: _unpad(y, size, padded), out)

        return apply


def _unpad(y, size: int, padded: dict) -> np.ndarray:
    """An output's rows without the padding; a fn must return per-example outputs."""
    y = np.asarray(y)
    rows = len(next(iter(jax.tree.leaves(padded))))
    if y.ndim == 0 or y.shape[0] != rows:
        raise ValueError(f"an evaluation function passed to apply returned shape {y.shape}; "
                         f"it must return per-example outputs, leading axis {rows} (the "
                         "batch rows), so that padding rows can be dropped")
    return y[:size]


class PmapParallel(DataParallel):
    """`jax.pmap` over the local devices; arrays carry a leading device axis."""

    mode = "pmap"

    def __init__(self):
        super().__init__()
        mesh = Mesh(np.array(self.devices), (AXIS,))
        self._sharding = NamedSharding(mesh, PartitionSpec(AXIS))
        self._place = _placement(self._sharding)

    def _put(self, stacked: Any) -> Any:
        """Places arrays whose leading axis has one entry per local device."""
        return jax.device_put(stacked, self._sharding)

    def put_batch(self, batch: dict) -> dict:
        """(B_local, ...) numpy -> (num_local, B_local / num_local, ...) on the devices."""
        split = lambda x: np.asarray(x).reshape((self.num_local, -1) + np.shape(x)[1:])
        stacked = jax.tree.map(split, batch)
        # jit cannot take numpy arguments with a sharding over this process's devices
        # when several processes run (multi-controller): then device_put does the work.
        return self._place(stacked) if self.process_count == 1 else self._put(stacked)

    def replicate(self, tree: Any) -> Any:
        """One copy of every leaf per local device (leading axis num_local)."""
        stack = lambda x: np.broadcast_to(np.asarray(x), (self.num_local,) + np.shape(x))
        return self._put(jax.tree.map(stack, jax.device_get(tree)))

    @staticmethod
    def read(tree: Any) -> Any:
        """Replicated (num_local, ...) arrays -> numpy of the first device's copy."""
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree)

    def place_state(self, state: Any) -> Any:
        """Host TrainState -> devices: replicated, except `stream`, already one per device."""
        stream = None if state.stream is None else self._put(jax.device_get(state.stream))
        return self.replicate(state.replace(stream=None)).replace(stream=stream)

    def host_state(self, state: Any) -> Any:
        """Devices -> host TrainState (numpy): one copy, except `stream`, kept one per device."""
        stream = None if state.stream is None else jax.device_get(state.stream)
        return self.read(state.replace(stream=None)).replace(stream=stream)

    host_params = read

    def metric_shapes(self, step_fn: StepFn, streaming: bool, state, batch, rng) -> dict:
        """{name: ShapeDtypeStruct} of one device's metrics (traced, not compiled)."""
        shapes = jax.eval_shape(jax.pmap(step_fn, axis_name=AXIS), state, batch, rng)[1]
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), shapes)

    def compile_train_step(self, step_fn: StepFn, streaming: bool, record: Record,
                           state: Any) -> Callable:
        """As `ShardedJit.compile_train_step`, pmapped (every argument has a device axis)."""

        def run(state, buffer, batch, rng):
            state, metrics = step_fn(state, batch, rng)
            return state, record(buffer, state.step, metrics), state.step

        return jax.pmap(run, axis_name=AXIS, donate_argnums=(0, 1))

    def make_apply(self) -> Callable:
        """`apply(fn, params, batch)`: runs fn(params, batch) pmapped on the local devices.

        params are host/unreplicated; the batch (any size) is padded to a multiple
        of the local device count and the outputs are un-padded numpy arrays.
        Compiled functions are cached per `fn`.
        """
        cache: dict[Callable, Callable] = {}
        replicated: dict[int, Any] = {}

        def apply(fn: Callable, params: Any, batch: dict) -> Any:
            if fn not in cache:
                cache[fn] = jax.pmap(fn, devices=self.devices)
            if id(params) not in replicated:
                replicated.clear()
                replicated[id(params)] = (params, self.replicate(params))
            padded, size = _pad_rows(batch, self.num_local)
            out = cache[fn](replicated[id(params)][1], self.put_batch(padded))
            return jax.tree.map(lambda y: np.asarray(y).reshape((-1,) + y.shape[2:])[:size], out)

        return apply
