"""attention_in_box and box_coverage on cases whose answers are worked out by hand.

Unless a test says otherwise: an 8 x 8 image under a 2 x 2 attention grid, so each
grid cell is 4 x 4 pixels, numbered row-major:
    cell 0: x 0-4, y 0-4    cell 1: x 4-8, y 0-4
    cell 2: x 0-4, y 4-8    cell 3: x 4-8, y 4-8
Boxes are (x0, y0, x1, y1) in pixels, x1 and y1 exclusive.
"""

from __future__ import annotations

import numpy as np

from rnnvision.metrics.attention import attention_in_box, box_coverage

GRID, IMAGE = (2, 2), (8, 8)
CELL = {0: [0, 0, 4, 4], 1: [4, 0, 8, 4], 2: [0, 4, 4, 8], 3: [4, 4, 8, 8]}  # boxes of one cell
PAD_BOX = [-1, -1, -1, -1]


def _score(alphas, named, classes, boxes, grid=GRID, image=IMAGE):
    """attention_in_box of one example: alphas (T, L), named (T,), classes (K,), boxes (K, 4)."""
    return attention_in_box(np.asarray([alphas], np.float64), np.asarray([named]),
                            np.asarray([classes]), np.asarray([boxes]), grid, image)


def _check(result, in_box, uniform, words):
    assert result["attention_words"] == words
    np.testing.assert_allclose(result["attention_in_box"], in_box, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["attention_in_box_uniform"], uniform, rtol=0, atol=1e-12)


def test_all_attention_inside_the_named_box():
    # One object (a "3") filling cell 0: a quarter of the image.
    _check(_score([[1, 0, 0, 0]], [3], [3], [CELL[0]]), in_box=1.0, uniform=0.25, words=1)


def test_all_attention_outside_the_named_box():
    _check(_score([[0, 0, 0, 1]], [3], [3], [CELL[0]]), in_box=0.0, uniform=0.25, words=1)


def test_attention_split_between_boxes_counts_the_named_one():
    # A "3" in cell 0 and a "7" in cell 3. Step 0 names the 3 (0.7 on cell 0);
    # step 1 names the 7 (0.4 on cell 3). Mean over the two steps: (0.7 + 0.4) / 2.
    alphas = [[0.7, 0.0, 0.0, 0.3], [0.2, 0.2, 0.2, 0.4]]
    _check(_score(alphas, [3, 7], [3, 7], [CELL[0], CELL[3]]), in_box=0.55, uniform=0.25, words=2)


def test_overlapping_boxes_each_get_the_shared_mass():
    # The "1" fills the top half (cells 0, 1), the "2" the right half (cells 1, 3);
    # cell 1 is in both. Naming the 1: 0.1 + 0.6; naming the 2: 0.6 + 0.2.
    alphas = [[0.1, 0.6, 0.1, 0.2]] * 2
    boxes = [[0, 0, 8, 4], [4, 0, 8, 8]]
    _check(_score(alphas, [1, 2], [1, 2], boxes), in_box=(0.7 + 0.8) / 2, uniform=0.5, words=2)


def test_a_grid_cell_partly_inside_a_box_counts_its_fraction():
    # Box x 2-4, y 0-4: the right half of cell 0 (8 of its 16 pixels), nothing else.
    _check(_score([[0.8, 0.2, 0, 0]], [5], [5], [[2, 0, 4, 4]]), in_box=0.4, uniform=8 / 64, words=1)
    # Box x 2-6, y 2-6: a 2 x 2 corner (a quarter) of every cell, whatever the attention.
    for alpha in ([1, 0, 0, 0], [0, 0.5, 0.5, 0], [0.25] * 4):
        _check(_score([alpha], [5], [5], [[2, 2, 6, 6]]), in_box=0.25, uniform=0.25, words=1)


def test_a_non_square_grid_reads_rows_as_y_and_columns_as_x():
    # A 6 x 8 image (H x W) under a 3 x 2 grid: cells 2 px high, 4 px wide;
    # cell (row i, column j) is index 2 i + j.
    grid, image = (3, 2), (6, 8)
    alpha = np.zeros(6)
    alpha[5] = 1.0  # row 2, column 1: x 4-8, y 4-6
    _check(_score([alpha], [4], [4], [[4, 4, 8, 6]], grid, image), in_box=1.0, uniform=8 / 48, words=1)
    _check(_score([alpha], [4], [4], [[0, 0, 4, 2]], grid, image), in_box=0.0, uniform=8 / 48, words=1)
    # A box of one pixel row, y 3-4: half the height of the cells of row 1.
    alpha = np.array([0, 0, 0.6, 0.4, 0, 0])
    _check(_score([alpha], [4], [4], [[0, 3, 8, 4]], grid, image), in_box=0.5, uniform=8 / 48, words=1)


def test_padding_objects_are_never_matched_nor_covered():
    # Padding: class -1 and a box with x0 < 0; a step with named = -1 names nothing.
    # Even a padding box with a valid-looking far corner covers nothing.
    result = _score([[0.9, 0.1, 0, 0], [0.5, 0.5, 0, 0]], [-1, 3], [3, -1, -1],
                    [CELL[1], PAD_BOX, [-1, 0, 8, 8]])
    _check(result, in_box=0.5, uniform=0.25, words=1)
    np.testing.assert_array_equal(box_coverage(np.asarray([[[-1, 0, 8, 8]]]), GRID, IMAGE), 0.0)


def test_words_naming_no_object_are_left_out():
    # Step 0 names a 9 (not in the scene), step 1 nothing (-1); only step 2 counts.
    alphas = [[1, 0, 0, 0], [1, 0, 0, 0], [0.3, 0.7, 0, 0]]
    _check(_score(alphas, [9, -1, 3], [3], [CELL[0]]), in_box=0.3, uniform=0.25, words=1)


def test_no_named_word_at_all_scores_zero_over_zero_words():
    _check(_score([[1, 0, 0, 0]], [-1], [3], [CELL[0]]), in_box=0.0, uniform=0.0, words=0)


def test_a_class_that_appears_twice_counts_once_per_object():
    # Two "3"s, in cells 0 and 3; one step names 3: (0.6 + 0.4) / 2 over 2 pairs.
    _check(_score([[0.6, 0, 0, 0.4]], [3], [3, 3], [CELL[0], CELL[3]]), in_box=0.5, uniform=0.25,
           words=2)


def test_examples_are_matched_within_themselves():
    # Both examples name a 3 looking at cell 0; the 3 is in cell 0 in the first,
    # cell 3 in the second (whose other object, a 5, sits in cell 0).
    alphas = np.asarray([[[1.0, 0, 0, 0]], [[1.0, 0, 0, 0]]])
    classes = np.asarray([[3, -1], [3, 5]])
    boxes = np.asarray([[CELL[0], PAD_BOX], [CELL[3], CELL[0]]])
    result = attention_in_box(alphas, np.asarray([[3], [3]]), classes, boxes, GRID, IMAGE)
    _check(result, in_box=0.5, uniform=0.25, words=2)


def test_uniform_attention_scores_the_uniform_baseline():
    # Boxes of 1/4, 1/2 and 6/64 of the image, each named once.
    boxes = [CELL[2], [0, 0, 8, 4], [1, 1, 4, 3]]
    uniform = (16 / 64 + 32 / 64 + 6 / 64) / 3
    result = _score(np.full((3, 4), 0.25), [0, 1, 2], [0, 1, 2], boxes)
    _check(result, in_box=uniform, uniform=uniform, words=3)


def test_box_coverage_fractions_by_hand():
    boxes = np.asarray([[[2, 0, 4, 4], [2, 2, 6, 6], [0, 0, 8, 8], [4, 0, 8, 4], [6, 5, 7, 8]]])
    expected = [[0.5, 0, 0, 0], [0.25] * 4, [1] * 4, [0, 1, 0, 0], [0, 0, 0, 3 / 16]]
    np.testing.assert_allclose(box_coverage(boxes, GRID, IMAGE)[0], expected, atol=1e-12)

