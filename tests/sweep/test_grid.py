"""The grid: values parsed as the config's field types, refusals naming the field, names,
run configs, and shards that cover every run exactly once."""

from __future__ import annotations

import collections
import os

import pytest

from rnnvision.config_checks import ConfigError
from rnnvision.sweep import Sweep, grid


def test_values_are_parsed_as_the_fields_types(config):
    axes = grid.parse_grid(["model.hidden_size=4,16", "optim.learning_rate=1e-3,0.003,1",
                            "train.remat=true,False", "model.cell=lstm,gru"], config)
    assert [a.values for a in axes] == [((4,), (16,)), ((0.001,), (0.003,), (1.0,)),
                                        ((True,), (False,)), (("lstm",), ("gru",))]
    assert type(axes[1].values[2][0]) is float  # "1" for a float field is the float 1.0


def test_linked_axis_sets_several_fields_together(config):
    axis = grid.parse_axis("optim.clip.method:optim.clip.threshold=none:1,value:0.1", config)
    assert axis.fields == ("optim.clip.method", "optim.clip.threshold")
    assert axis.values == (("none", 1.0), ("value", 0.1))


@pytest.mark.parametrize("spec,field,value", [
    ("model.hidden_size=4,abc", "model.hidden_size", "abc"),
    ("model.hidden_size=4,2.5", "model.hidden_size", "2.5"),
    ("optim.learning_rate=0.1,fast", "optim.learning_rate", "fast"),
    ("train.remat=yes", "train.remat", "yes"),
    ("model.hiden_size=4", "model.hiden_size", "<missing>"),
    ("seed=1,2", "seed", "--grid"),
    ("model=1", "model", None),                       # a section, not a value
    ("model.cell=lstm,lstm", "model.cell", "lstm,lstm"),
    ("optim.clip.method:optim.clip.threshold=value", "optim.clip.method:optim.clip.threshold",
     "value"),
])
def test_bad_grid_values_are_refused_naming_field_and_value(config, spec, field, value):
    with pytest.raises(ConfigError) as error:
        grid.parse_axis(spec, config)
    assert error.value.field == field
    if value is not None:
        assert repr(value) in str(error.value)


def test_malformed_and_repeated_axes_are_refused(config):
    with pytest.raises(ConfigError, match="--grid"):
        grid.parse_axis("model.hidden_size", config)
    with pytest.raises(ConfigError, match="one --grid per field"):
        grid.parse_grid(["model.hidden_size=4", "model.hidden_size=8"], config)


def test_points_are_the_product_with_filesystem_safe_distinct_names(config):
    axes = grid.parse_grid(["model.cell=lstm,gru", "optim.learning_rate=0.001,0.003"], config)
    names = [p.name for p in grid.points(axes)]
    assert names == ["model.cell=lstm,optim.learning_rate=0.001",
                     "model.cell=lstm,optim.learning_rate=0.003",
                     "model.cell=gru,optim.learning_rate=0.001",
                     "model.cell=gru,optim.learning_rate=0.003"]
    odd = grid.parse_axis("model.cell=a/b,a b,a%2Fb", config)
    odd_names = [p.name for p in grid.points([odd])]
    assert len(set(odd_names)) == 3 and not any("/" in n or " " in n for n in odd_names)
    assert [p.name for p in grid.points([])] == ["default"]


def test_run_config_sets_values_and_seeds_and_leaves_the_base_alone(config):
    config.data = config.model.__class__({"order_seed": 7})
    axes = grid.parse_grid(["model.hidden_size=4,16"], config)
    run = grid.expand(grid.points(axes), seeds=3)[5]
    assert (run.point.name, run.seed) == ("model.hidden_size=16", 2)
    assert run.workdir("D") == os.path.join("D", "runs", "model.hidden_size=16", "seed2")
    c = grid.run_config(config, run.point.values, run.seed, seed_fields=["data.order_seed"])
    assert (c.model.hidden_size, c.seed, c.data.order_seed) == (16, config.seed + 2, 9)
    assert config.model.hidden_size == 8 and config.data.order_seed == 7


@pytest.mark.parametrize("num_runs,num_shards", [(12, 1), (12, 2), (12, 5), (7, 3), (3, 8)])
def test_shards_cover_every_run_exactly_once(config, num_runs, num_shards):
    axes = grid.parse_grid([f"model.hidden_size={','.join(str(i + 1) for i in range(num_runs))}"],
                           config)
    runs = grid.expand(grid.points(axes), seeds=1)
    seen = collections.Counter()
    for i in range(num_shards):
        part = grid.shard(runs, f"{i}/{num_shards}")
        assert len(part) in (num_runs // num_shards, -(-num_runs // num_shards))  # balanced
        seen.update(part)
    assert set(seen) == set(runs) and set(seen.values()) == {1}


@pytest.mark.parametrize("spec", ["1/1", "2", "-1/3", "a/b", "0/0"])
def test_bad_shard_spec_is_refused(spec):
    with pytest.raises(ConfigError, match="--shard"):
        grid.parse_shard(spec)


def test_sweep_parse_checks_seeds_and_seed_fields(config):
    with pytest.raises(ConfigError, match="--seeds"):
        Sweep.parse(config, ["model.hidden_size=4"], seeds=0)
    with pytest.raises(ConfigError, match="model.cell"):
        Sweep.parse(config, [], seeds=2, seed_fields=["model.cell"])  # not an int field
    with pytest.raises(ConfigError, match="model.hidden_size"):
        Sweep.parse(config, ["model.hidden_size=4"], seeds=2, seed_fields=["model.hidden_size"])
    sweep = Sweep.parse(config, ["model.hidden_size=4,8"], seeds=2)
    assert sweep.main_metric == "mse" and len(sweep.runs) == 4
