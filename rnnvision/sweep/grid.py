r"""The grid of a sweep: axes over config fields, grid points, runs (point x seed), shards.

    --grid=model.cell=lstm,gru                       one axis, one field
    --grid=optim.clip.method:optim.clip.threshold=none:1,value:0.1
                                                     one axis over two fields set together

An axis is parsed against the base config: every field must exist and hold an int,
float, bool or str, and every value is parsed as that field's type (int "3", float
"1e-3", bool "true"/"false", str as written); anything else is refused with a
`ConfigError` naming the field and the value, before anything runs. The grid is the
product of the axes, in the order given; a grid point is one value per axis.

A point's name is its sub-directory: `field=value` pairs joined by commas, e.g.
`model.cell=gru,optim.learning_rate=0.003` (floats as Python's shortest round-trip
repr; characters other than letters, digits and `._-+~` percent-encoded, so names are
filesystem-safe and distinct values give distinct names); "default" for an empty grid.

A run is a point and a seed index i in 0 .. seeds-1, in DIR/runs/<point>/seed<i>; its
config is the base config with the point's values set, `seed = base seed + i`, and
each field in `seed_fields` (e.g. a task's own data-order seed) also offset by i.
`shard(runs, "i/n")` keeps runs j with j % n == i: n shards run each run exactly once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import urllib.parse
from typing import Any, Iterable, Sequence

import ml_collections

from rnnvision.config_checks import ConfigError, get_field, set_field

GRID_TYPES = (bool, int, float, str)
_MAX_NAME = 180  # keep a sub-directory name well below the usual 255-byte limit


@dataclasses.dataclass(frozen=True)
class Axis:
    """fields: config fields set together; values: one tuple (a value per field) per step."""

    fields: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]

    def to_json(self) -> dict[str, list]:
        return {"fields": list(self.fields), "values": [list(v) for v in self.values]}


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: `values` ((field, value) pairs, in grid order) and its `name`."""

    name: str
    values: tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Run:
    """A grid point (anything with `.name` and `.values`) and a seed index."""

    point: Any
    seed: int

    @property
    def label(self) -> str:
        return f"{self.point.name}/seed{self.seed}"

    def workdir(self, root: str) -> str:
        return os.path.join(root, "runs", self.point.name, f"seed{self.seed}")


# -- parsing --------------------------------------------------------------------------------

def _type_name(kind: type) -> str:
    return {bool: "True or False", int: "an integer", float: "a number",
            str: "a string"}[kind]


def parse_value(field: str, text: str, current: Any) -> Any:
    """`text` as the type of the field's current value; ConfigError naming both otherwise."""
    kind = type(current)
    allowed = f"{_type_name(kind)}, the type of {field} in the config (now {current!r})"
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ConfigError(field, text, allowed)
        return lowered == "true"
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(field, text, allowed) from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(field, text, allowed) from None
    return text


def _check_field(config, field: str, reserved: Iterable[str]) -> Any:
    """The field's current value; ConfigError if it is missing, reserved or not a scalar."""
    if field in reserved:
        raise ConfigError(field, "--grid", "a field the sweep does not set itself "
                          "(seeds come from --seeds and --seed_fields)")
    try:
        current = get_field(config, field)
    except (KeyError, AttributeError):
        parent, _, _ = field.rpartition(".")
        try:
            node = get_field(config, parent) if parent else config
            known = sorted(node.keys())
        except (KeyError, AttributeError):
            known = sorted(config.keys())
        raise ConfigError(field, "<missing>", f"a field of the config (fields there: {known})"
                          ) from None
    if type(current) not in GRID_TYPES:
        raise ConfigError(field, current, "a field holding an int, float, bool or str "
                          f"(it holds {type(current).__name__})")
    return current


def parse_axis(spec: str, config, reserved: Iterable[str] = ("seed",)) -> Axis:
    """"model.cell=lstm,gru" or "a.b:c.d=1:x,2:y" -> Axis, values parsed by field type."""
    head, sep, tail = spec.partition("=")
    if not sep or not head.strip() or not tail.strip():
        raise ConfigError("--grid", spec, "'<field>=<value>,<value>,...' or "
                          "'<field>:<field>=<value>:<value>,...'")
    fields = tuple(f.strip() for f in head.split(":"))
    currents = [_check_field(config, f, reserved) for f in fields]
    values = []
    for item in tail.split(","):
        parts = item.split(":") if len(fields) > 1 else [item]
        if len(parts) != len(fields) or not item.strip():
            raise ConfigError(":".join(fields), item,
                              f"{len(fields)} value(s) separated by ':' (one per field)")
        values.append(tuple(parse_value(f, p.strip(), c)
                            for f, p, c in zip(fields, parts, currents)))
    if len(set(values)) != len(values):
        raise ConfigError(":".join(fields), tail, "distinct values")
    return Axis(fields, tuple(values))


def parse_grid(specs: Sequence[str], config, reserved: Iterable[str] = ("seed",)) -> list[Axis]:
    """Every --grid flag as an Axis; a field may appear in one axis only."""
    axes = [parse_axis(spec, config, reserved) for spec in specs]
    seen: dict[str, str] = {}
    for axis, spec in zip(axes, specs):
        for field in axis.fields:
            if field in seen:
                raise ConfigError(field, spec, f"one --grid per field (also in {seen[field]!r})")
            seen[field] = spec
    return axes


def parse_shard(text: str, field: str = "--shard") -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError(field, text, "'i/n' with 0 <= i < n, e.g. 0/4")
    return i, n


# -- points, runs, shards --------------------------------------------------------------------

def format_value(value: Any) -> str:
    """A value as it appears in a point's name (filesystem-safe, distinct values distinct)."""
    text = repr(value) if isinstance(value, float) else str(value)
    return urllib.parse.quote(text, safe="+")


def point_name(values: Sequence[tuple[str, Any]]) -> str:
    """"model.cell=gru,optim.learning_rate=0.003"; "default" when the grid is empty."""
    name = ",".join(f"{field}={format_value(v)}" for field, v in values) or "default"
    if len(name) > _MAX_NAME:  # readable prefix + a digest of the whole name
        name = f"{name[:_MAX_NAME - 11]}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"
    return name


def product(axes: Sequence[Axis]) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of one value per axis: (field, value) pairs in axis order."""
    combos = itertools.product(*(axis.values for axis in axes))
    return [tuple(pair for axis, vs in zip(axes, combo) for pair in zip(axis.fields, vs))
            for combo in combos]


def points(axes: Sequence[Axis]) -> list[Point]:
    out = [Point(point_name(values), values) for values in product(axes)]
    if len({p.name for p in out}) != len(out):
        raise ConfigError("--grid", [a.to_json() for a in axes], "values with distinct names")
    return out


def expand(grid_points: Sequence[Any], seeds: int) -> list[Run]:
    """Every run: each point with seed indices 0 .. seeds-1 (point-major order)."""
    if not (isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1):
        raise ConfigError("--seeds", seeds, "an integer >= 1")
    return [Run(p, s) for p in grid_points for s in range(seeds)]


def shard(runs: Sequence[Run], spec: str, field: str = "--shard") -> list[Run]:
    """The runs j with j % n == i of "i/n"."""
    i, n = parse_shard(spec, field)
    return list(runs[i::n])


def run_config(base, values: Sequence[tuple[str, Any]], seed: int,
               seed_fields: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config of one run: a copy of `base` with `values` set, `seed = base.seed + seed`,
    and every field of `seed_fields` offset by `seed` too. `base` is not changed."""
    config = ml_collections.ConfigDict(base.to_dict())
    for field, value in values:
        set_field(config, field, value)
    config.seed = base.seed + seed
    for field in seed_fields:
        set_field(config, field, get_field(base, field) + seed)
    config.lock()
    return config


def check_seed_fields(config, fields: Sequence[str]) -> None:
    """Each seed field exists and holds an int (ConfigError naming it otherwise)."""
    for field in fields:
        current = _check_field(config, field, ("seed",))
        if type(current) is not int:
            raise ConfigError(field, current, "an integer field (--seed_fields offsets it "
                              "by the seed index)")
