"""Data parallelism: pmap over local devices, jax.distributed across hosts.

The global batch of a config is split first across processes (each loads only
its rows), then across each process's local devices. Gradients are averaged
over all devices of all hosts with `lax.pmean` inside the train step.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

AXIS = "batch"


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


class DataParallel:
    """Places batches and state on the local devices and runs pmapped functions."""

    def __init__(self):
        self.devices = jax.local_devices()
        self.num_local = len(self.devices)
        self.num_global = jax.device_count()
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()
        mesh = jax.sharding.Mesh(np.array(self.devices), (AXIS,))
        self._sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))

    def process_rows(self, global_batch_size: int) -> slice:
        """The rows of the global batch this process loads."""
        per_process = global_batch_size // self.process_count
        start = self.process_index * per_process
        return slice(start, start + per_process)

    def _put(self, stacked: Any) -> Any:
        """Places arrays whose leading axis has one entry per local device."""
        return jax.device_put(stacked, self._sharding)

    def shard(self, batch: dict) -> dict:
        """(B_local, ...) numpy -> (num_local, B_local / num_local, ...) on the devices."""
        split = lambda x: np.asarray(x).reshape((self.num_local, -1) + np.shape(x)[1:])
        return self._put(jax.tree.map(split, batch))

    def replicate(self, tree: Any) -> Any:
        """One copy of every leaf per local device (leading axis num_local)."""
        stack = lambda x: np.broadcast_to(np.asarray(x), (self.num_local,) + np.shape(x))
        return self._put(jax.tree.map(stack, jax.device_get(tree)))

    @staticmethod
    def unreplicate(tree: Any) -> Any:
        return jax.tree.map(lambda x: x[0], tree)

    def place_state(self, state: Any) -> Any:
        """Host TrainState -> devices: replicated, except `stream`, already one per device."""
        stream = None if state.stream is None else self._put(jax.device_get(state.stream))
        return self.replicate(state.replace(stream=None)).replace(stream=stream)

    def host_state(self, state: Any) -> Any:
        """Devices -> host TrainState: one copy, except `stream`, kept one per device."""
        stream = None if state.stream is None else jax.device_get(state.stream)
        return self.unreplicate(state.replace(stream=None)).replace(stream=stream)

    def stack_per_device(self, tree: Any) -> Any:
        """The same value for every local device, stacked on a leading axis (host numpy)."""
        return jax.tree.map(lambda x: np.stack([np.asarray(x)] * self.num_local), tree)

    def pmap_train_step(self, train_step: Callable) -> Callable:
        # The base RNG key is replicated too (in_axes 0) so every argument lives on the devices.
        return jax.pmap(train_step, axis_name=AXIS, donate_argnums=(0,))

    def make_apply(self) -> Callable:
        """`apply(fn, params, batch)`: runs fn(params, batch) on the local devices.

        params are host/unreplicated; the batch (any size) is padded to a multiple
        of the local device count and the outputs are un-padded numpy arrays.
        Compiled functions are cached per `fn`.
        """
        cache: dict[Callable, Callable] = {}
        replicated: dict[int, Any] = {}

        def apply(fn: Callable, params: Any, batch: dict) -> Any:
            if fn not in cache:
                cache[fn] = jax.pmap(fn, devices=self.devices)
            key = id(params)
            if key not in replicated:
                replicated.clear()
                replicated[key] = (params, self.replicate(params))
            size = len(next(iter(jax.tree.leaves(batch))))
            pad = -size % self.num_local
            padded = jax.tree.map(
                lambda x: np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x, batch)
            out = cache[fn](replicated[key][1], self.shard(padded))
            return jax.tree.map(lambda y: np.asarray(y).reshape((-1,) + y.shape[2:])[:size], out)

        return apply
