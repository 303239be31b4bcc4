"""Deterministic, resumable batch indices: a pure function of the step number.

`EpochSampler.indices(step)` depends only on (num_examples, batch_size, seed,
drop_remainder, step), never on what was asked before, so a run resumed from a
checkpoint at step s draws exactly the batches an uninterrupted run would have drawn,
with nothing to save but the step.

Epoch e visits the examples in the order `np.random.default_rng([seed, e])
.permutation(num_examples)`, a fresh shuffle per epoch. With B = batch_size and
N = num_examples, batches are cut from these permutations in one of two ways:

* `drop_remainder=True`: each epoch is floor(N / B) batches; step s is batch
  s % (N // B) of epoch s // (N // B): `perm_e[k*B : (k+1)*B]`. The last N % B entries of
  each permutation are skipped; as the permutation changes every epoch, so do the
  skipped examples. No batch straddles two epochs.
* `drop_remainder=False`: the permutations are laid end to end as one stream and step s
  takes stream positions s*B .. s*B+B-1, so position p is `perm_{p // N}[p % N]` and the
  epoch of a step's first example is (s * B) // N. A batch may straddle two epochs: it
  finishes one permutation and starts the next, so batches always have B examples and no
  example is repeated or dropped within any epoch.

Either way every epoch holds each example at most once, and exactly once when B divides
N (the two modes then coincide).
"""

from __future__ import annotations

import numpy as np


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"EpochSampler: {name}={value!r}; must be an integer >= {minimum}.")
    return int(value)


class EpochSampler:
    """Batch indices for a training step, shuffled afresh every epoch.

    Attributes:
      num_examples: N, the size of the data set.
      batch_size: B, examples per batch; 1 <= B <= N.
      seed: integer >= 0; epoch e is shuffled by `default_rng([seed, e])`.
      drop_remainder: see the module docstring.

    Example:
      sampler = EpochSampler(len(images), batch_size=128, seed=0)
      for step in range(start_step, num_steps):   # start_step from the checkpoint.
        idx = sampler.indices(step)               # int64 (128,)
        batch = images[idx], labels[idx]
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int,
                 drop_remainder: bool = True):
        self.num_examples = _check_int("num_examples", num_examples, 1)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.drop_remainder = bool(drop_remainder)
        if self.batch_size > self.num_examples:
            raise ValueError(
                f"EpochSampler: batch_size={self.batch_size} is larger than "
                f"num_examples={self.num_examples}; allowed: 1..{self.num_examples}."
            )
        # A cache only: results never depend on it. Consecutive steps mostly share an
        # epoch, and re-shuffling 60k indices every step would cost about a millisecond.
        self._cached_epoch, self._cached_perm = -1, np.empty(0, np.int64)

    @property
    def num_batches_per_epoch(self) -> int:
        """Steps per epoch: N // B when dropping the remainder, else ceil(N / B).

        Without dropping, ceil(N / B) steps see every example of an epoch at least once
        (the last of them may already start the next epoch).
        """
        if self.drop_remainder:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def epoch(self, step: int) -> int:
        """The epoch that step `step`'s first example belongs to."""
        step = _check_int("step", step, 0)
        if self.drop_remainder:
            return step // self.num_batches_per_epoch
        return step * self.batch_size // self.num_examples

    def permutation(self, epoch: int) -> np.ndarray:
        """int64 (N,): the order in which epoch `epoch` visits the examples."""
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self._cached_epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            self._cached_epoch, self._cached_perm = epoch, perm
        return self._cached_perm

    def indices(self, step: int) -> np.ndarray:
        """int64 (batch_size,): the example indices of training step `step` (>= 0)."""
        step = _check_int("step", step, 0)
        n, b = self.num_examples, self.batch_size
        if self.drop_remainder:
            epoch, k = divmod(step, self.num_batches_per_epoch)
            return self.permutation(epoch)[k * b:(k + 1) * b].copy()
        first = step * b  # Stream position of this batch's first example.
        epoch, offset = divmod(first, n)
        head = self.permutation(epoch)[offset:offset + b]
        if len(head) == b:
            return head.copy()
        # Straddles: finish this epoch's permutation, then start the next one (b <= n,
        # so two epochs always suffice).
        tail = self.permutation(epoch + 1)[:b - len(head)]
        return np.concatenate([head, tail])
