"""docs/adding_a_cell.md's worked example, docs/examples/mgu.py, is a correct cell."""

import doctest
import importlib.util
import pathlib
import re

import jax
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.testing import check_cell, prng_key

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def mgu():
    """docs/examples/mgu.py imported from its path (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("docs_example_mgu", DOCS / "examples" / "mgu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs its register("mgu", MGUCell)
    return module


def test_importing_registers_the_cell(mgu):
    assert cells.lookup("mgu") is mgu.MGUCell
    assert cells.get("mgu", hidden_size=5) == mgu.MGUCell(hidden_size=5)


def test_check_cell(mgu):
    check_cell(cells.get("mgu", hidden_size=4), input_shape=(3,))


def test_step_follows_the_documented_equations(mgu):
    cell = mgu.MGUCell(hidden_size=4)
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(v.shape).astype(np.float32)
              for k, v in cell.init(prng_key(0), (3,)).items()}
    h = rng.standard_normal((2, 4)).astype(np.float32)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    _, y = jax.jit(cell.step)(params, h, x)

    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    # Gate blocks in the order f, candidate.
    (w_xf, w_xh), (w_hf, w_hh), (b_f, b_h) = (np.split(params[k], 2, axis=-1)
                                              for k in ("w_x", "w_h", "b"))
    f = sigmoid(x @ w_xf + h @ w_hf + b_f)
    candidate = np.tanh(x @ w_xh + (f * h) @ w_hh + b_h)
    np.testing.assert_allclose(y, (1 - f) * h + f * candidate, rtol=1e-5, atol=1e-5)


def test_the_doc_lists_the_example_file_verbatim(mgu):
    doc = (DOCS / "adding_a_cell.md").read_text()
    listing = re.search(r"<!-- mgu.py: begin.*?-->\n```python\n(.*?)```\n<!-- mgu.py: end -->", doc, re.S)
    assert listing, "the mgu.py listing markers are missing from docs/adding_a_cell.md"
    assert listing.group(1) == (DOCS / "examples" / "mgu.py").read_text()


@pytest.mark.slow  # eager init with the default threefry key compiles for seconds on CPU
def test_docstring_example_runs(mgu):
    result = doctest.testmod(mgu)
    assert result.attempted > 0 and result.failed == 0
