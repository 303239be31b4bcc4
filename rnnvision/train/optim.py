"""Optimizers, schedules and gradient clipping from config, all optax."""

from __future__ import annotations

import optax


def make_schedule(optim_cfg, num_steps: int) -> optax.Schedule:
    lr, name = optim_cfg.learning_rate, optim_cfg.schedule
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=num_steps)
    if name == "linear":
        return optax.linear_schedule(lr, 0.0, transition_steps=num_steps)
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, optim_cfg.warmup_steps, num_steps)
    raise ValueError(f"optim.schedule={name!r} is not known")


def make_optimizer(optim_cfg, num_steps: int) -> optax.GradientTransformation:
    """The update rule (without clipping: the trainer clips first, to log both norms)."""
    lr = make_schedule(optim_cfg, num_steps)
    name = optim_cfg.optimizer
    if name == "adam":
        return optax.adam(lr)
    if name == "adamw":
        return optax.adamw(lr, weight_decay=optim_cfg.weight_decay)
    if name == "sgd":
        return optax.sgd(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum=optim_cfg.momentum)
    if name == "rmsprop":
        return optax.rmsprop(lr, momentum=optim_cfg.momentum)
    raise ValueError(f"optim.optimizer={name!r} is not known")


def make_clipper(clip_cfg) -> optax.GradientTransformation:
    """Stateless gradient clipping: none, global_norm, value or adaptive (AGC)."""
    method, threshold = clip_cfg.method, clip_cfg.threshold
    if method == "none":
        return optax.identity()
    if method == "global_norm":
        return optax.clip_by_global_norm(threshold)
    if method == "value":
        return optax.clip(threshold)
    if method == "adaptive":
        return optax.adaptive_grad_clip(threshold)
    raise ValueError(f"optim.clip.method={method!r} is not known")
