"""Digit scenes (grammar, determinism, held-out split), the vocabulary, COCO via TFDS mocks."""

from __future__ import annotations

import itertools
import types

import numpy as np
import pytest

from rnnvision.data import digit_scenes as ds
from rnnvision.data import synthetic_digits
from rnnvision.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocabulary, tokenize


@pytest.fixture(scope="module")
def pool():
    return synthetic_digits.make_digits(60, seed=3)  # six of each class


def _scenes(pool, split, **kw):
    return ds.DigitScenes(*pool, split, seed=1, **kw)


# -- grammar -----------------------------------------------------------------------------


@pytest.mark.parametrize("layout,expected", [
    (ds.Layout((7,), (0,), ((0, 0),)),
     ["a small 7 at the top left", "there is a small 7 at the top left",
      "at the top left there is a small 7"]),
    (ds.Layout((5,), (1,), ((1, 1),)), ["a large 5 at the centre", "there is a large 5 at the centre",
                                        "at the centre there is a large 5"]),
    (ds.Layout((4,), (1,), ((2, 1),)), ["a large 4 at the bottom", "there is a large 4 at the bottom",
                                        "at the bottom there is a large 4"]),
    (ds.Layout((7, 2), (0, 1), ((0, 1), (2, 1))),
     ["a small 7 above a large 2", "a large 2 below a small 7",
      "there is a small 7 above a large 2", "there is a large 2 below a small 7"]),
    (ds.Layout((3, 8), (1, 1), ((1, 0), (1, 1))),
     ["a large 3 left of a large 8", "a large 8 right of a large 3",
      "there is a large 3 left of a large 8", "there is a large 8 right of a large 3"]),
    (ds.Layout((3, 8, 1), (0, 1, 0), ((2, 0), (2, 1), (2, 2))),
     ["a small 3 , a large 8 and a small 1 from left to right",
      "a small 1 , a large 8 and a small 3 from right to left",
      "there is a small 3 , a large 8 and a small 1 from left to right",
      "there is a small 1 , a large 8 and a small 3 from right to left"]),
    (ds.Layout((0, 6, 9), (1, 1, 0), ((0, 2), (1, 2), (2, 2))),
     ["a large 0 , a large 6 and a small 9 from top to bottom",
      "a small 9 , a large 6 and a large 0 from bottom to top",
      "there is a large 0 , a large 6 and a small 9 from top to bottom",
      "there is a small 9 , a large 6 and a large 0 from bottom to top"]),
])
def test_grammar_phrasings(layout, expected):
    assert ds.captions(layout) == expected


def test_every_position_has_a_phrase():
    phrases = [ds.position_phrase(divmod(i, 3)) for i in range(9)]
    assert phrases == ["top left", "top", "top right", "left", "centre", "right",
                       "bottom left", "bottom", "bottom right"]


def test_layouts_follow_the_documented_rules():
    rng = np.random.default_rng(0)
    for held_out in (False, True):
        for _ in range(300):
            layout = ds.sample_layout(rng, held_out)
            n = len(layout.classes)
            assert (2 if held_out else 1) <= n <= 3
            assert len(set(layout.classes)) == n and all(0 <= c <= 9 for c in layout.classes)
            assert len(set(layout.cells)) == n
            if n >= 2:  # one row or one column, in reading order
                rows, cols = zip(*layout.cells)
                assert len(set(rows)) == 1 or len(set(cols)) == 1
                assert list(layout.cells) == sorted(layout.cells)
            if n == 3:
                assert sorted(rows) == [0, 1, 2] or sorted(cols) == [0, 1, 2]
            assert bool(ds.held_out_pairs_in(layout.classes)) == held_out
            assert all(len(tokenize(c)) <= 16 for c in ds.captions(layout))


def test_held_out_pairs_are_the_documented_ten():
    assert len(ds.HELD_OUT_PAIRS) == 10
    assert all((sum(p) % 10) in (3, 9) for p in ds.HELD_OUT_PAIRS)
    per_class = [sum(c in p for p in ds.HELD_OUT_PAIRS) for c in range(10)]
    assert per_class == [2] * 10


def test_held_out_pairs_never_appear_in_training_captions(pool):
    train = _scenes(pool, "train")
    evaluation = _scenes(pool, "eval")
    for i in range(400):
        words = set(tokenize(" ".join(ds.captions(train.layout(i)))))
        assert not any(p <= {int(w) for w in words if w.isdigit()} for p in ds.HELD_OUT_PAIRS)
    eval_pairs = [ds.held_out_pairs_in(evaluation.layout(i).classes) for i in range(200)]
    assert all(eval_pairs)
    # Every held-out pair is represented in a modest evaluation set.
    assert set(itertools.chain(*eval_pairs)) == set(ds.HELD_OUT_PAIRS)


# -- rendering ---------------------------------------------------------------------------


def test_scenes_are_deterministic_per_seed_split_and_index(pool):
    a, b = _scenes(pool, "train"), _scenes(pool, "train")
    for i in (0, 5, 123):
        image_a, layout_a, boxes_a = a.scene(i)
        image_b, layout_b, boxes_b = b.scene(i)
        np.testing.assert_array_equal(image_a, image_b)
        assert layout_a == layout_b and (boxes_a == boxes_b).all()
    batch = a.batch([5, 0])
    np.testing.assert_array_equal(batch.images[1], a.scene(0)[0])
    assert batch.captions[0] == ds.captions(a.layout(5))
    assert not np.array_equal(a.scene(0)[0], a.scene(1)[0])
    other_seed = ds.DigitScenes(*pool, "train", seed=2)
    assert [other_seed.layout(i) for i in range(10)] != [a.layout(i) for i in range(10)]
    seen = _scenes(pool, "eval_seen")
    assert [seen.layout(i) for i in range(10)] != [a.layout(i) for i in range(10)]


def test_digits_lie_in_their_boxes_with_the_right_sizes(pool):
    scenes = _scenes(pool, "train")
    batch = scenes.batch(range(50))
    for image, layout, classes, boxes in zip(batch.images, batch.layouts, batch.classes,
                                             batch.boxes):
        assert image.shape == (48, 48) and image.dtype == np.uint8
        inside = np.zeros_like(image, bool)
        for k, (size, (row, col)) in enumerate(zip(layout.sizes, layout.cells)):
            x0, y0, x1, y1 = boxes[k]
            assert x1 - x0 == y1 - y0 == (16 if size else 10)
            assert 16 * col <= x0 and x1 <= 16 * (col + 1) and 16 * row <= y0 and y1 <= 16 * (row + 1)
            assert image[y0:y1, x0:x1].max() > 100  # the digit is there
            inside[y0:y1, x0:x1] = True
        assert image[~inside].max(initial=0) == 0  # and nothing else
        assert list(classes[:len(layout.classes)]) == list(layout.classes)
        assert (classes[len(layout.classes):] == -1).all() and (boxes[len(layout.classes):] == -1).all()


def test_sprites_fill_their_square_around_the_ink(pool):
    sprites = ds.digit_sprites(pool[0][:20], 10)
    assert sprites.shape == (20, 10, 10)
    ink = sprites > 40
    # The longer side of the ink spans the square.
    spans = [max(np.ptp(np.nonzero(s)[0]), np.ptp(np.nonzero(s)[1])) for s in ink]
    assert min(spans) >= 8


def test_bad_arguments_name_the_problem(pool):
    with pytest.raises(ValueError, match="split="):
        ds.DigitScenes(*pool, "test")
    with pytest.raises(ValueError, match="small_size"):
        ds.DigitScenes(*pool, "train", small_size=16, large_size=16)
    with pytest.raises(ValueError, match="no examples of classes"):
        ds.DigitScenes(pool[0][:5], pool[1][:5], "train")


# -- vocabulary --------------------------------------------------------------------------


def test_tokenize_lower_cases_and_drops_punctuation():
    assert tokenize("A man's Horse, on the beach.") == ["a", "man's", "horse", "on", "the", "beach"]
    assert tokenize("a small 7 , a large 2") == ["a", "small", "7", "a", "large", "2"]


def test_vocabulary_min_count_order_and_round_trip(tmp_path):
    vocab = Vocabulary.build(["b a a", "c a b", "d"], min_count=2)
    assert vocab.words == list(SPECIALS) + ["a", "b"]  # by count, then alphabetical
    assert vocab.encode(["a", "c", "b"]) == [4, UNK_ID, 5]
    assert vocab.decode([BOS_ID, 4, 5, EOS_ID, 4]) == ["a", "b"]
    path = vocab.save(str(tmp_path / "sub" / "vocab.json"))
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.min_count == 2


def test_encode_batch_builds_teacher_forcing_arrays():
    vocab = Vocabulary.build(["a b c"])
    tokens, mask = vocab.encode_batch([["a", "b"], ["c", "a", "b", "c"]], max_length=3)
    a, b, c = (vocab.id(w) for w in "abc")
    np.testing.assert_array_equal(tokens, [[BOS_ID, a, b, EOS_ID, PAD_ID],
                                           [BOS_ID, c, a, b, EOS_ID]])  # cut to 3 words
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 1, 1]])


def test_vocabulary_rejects_a_bad_layout():
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])


# -- COCO through TFDS (mocked) ------------------------------------------------------------


def _coco_cfg(**kw):
    cfg = dict(coco_name="coco_captions", tfds_data_dir="", image_size=32, coco_max_images=5,
               cache_dir="")
    cfg.update(kw)
    return types.SimpleNamespace(**cfg)


def test_coco_pipeline_under_tfds_mock(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from rnnvision.data.coco_captions import load_coco_captions

    with tfds.testing.mock_data(num_examples=8):
        data = load_coco_captions(_coco_cfg(), "train")
        cached = load_coco_captions(_coco_cfg(cache_dir=str(tmp_path)), "train")
        again = load_coco_captions(_coco_cfg(cache_dir=str(tmp_path)), "train")  # from the cache
    assert data.images.shape == (5, 32, 32, 3) and data.images.dtype == np.uint8
    assert len(data.captions) == 5 and all(isinstance(c, str) for c in data.captions[0])
    assert len(data.ids) == 5
    np.testing.assert_array_equal(cached.images, data.images)
    np.testing.assert_array_equal(again.images, data.images)
    assert again.captions == data.captions and list(again.ids) == list(data.ids)
