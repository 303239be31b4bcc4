"""Caption tokenizer and vocabulary (min-count, special tokens, JSON save/load).

    tokens = tokenize("A man, riding a horse.")       # ['a', 'man', 'riding', 'a', 'horse']
    vocab = Vocabulary.build(all_training_captions, min_count=5)
    ids, mask = vocab.encode_batch(token_lists, max_length=16)   # see `encode_batch`
    vocab.save(path); vocab = Vocabulary.load(path)

Tokenization follows what the COCO caption evaluation scores on (its PTB tokenizer
with punctuation removed): lower-cased words and numbers; punctuation is dropped,
an apostrophe stays inside a word ("man's"). Ids 0..3 are the special tokens
`<pad>`, `<bos>`, `<eos>`, `<unk>`; words follow by decreasing count (ties
alphabetical), so a vocabulary is a pure function of the caption counts.
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cases and splits into words and numbers; punctuation is dropped."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Words <-> ids. `words[i]` is the word of id i; ids 0-3 are SPECIALS."""

    def __init__(self, words: Sequence[str], min_count: int = 1):
        if tuple(words[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}; got {list(words[:4])}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.words = list(words)
        self.min_count = min_count
        self._ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str | Sequence[str]], min_count: int = 1) -> "Vocabulary":
        """From captions (strings, tokenized here, or token lists): words seen >= min_count times."""
        if not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count={min_count!r} must be an integer >= 1")
        counts = collections.Counter()
        for caption in captions:
            counts.update(tokenize(caption) if isinstance(caption, str) else caption)
        kept = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept, min_count)

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def id(self, word: str) -> int:
        return self._ids.get(word, UNK_ID)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token list -> ids (unknown words -> <unk>), without <bos>/<eos>."""
        return [self.id(w) for w in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at the first <eos>; <pad> and <bos> are skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(self.words[i] if 0 <= i < len(self.words) else UNK)
        return out

    def encode_batch(self, token_lists: Sequence[Sequence[str]],
                     max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forcing arrays for captions of at most `max_length` words.

        Longer captions are cut to `max_length` words (their <eos> is kept); callers
        that want to know count them (`CaptioningTask` logs the fraction as
        "captions_cut" and warns at start-up).

        Returns:
          tokens: int32 (N, max_length + 2): <bos> w_1 .. w_n <eos> <pad> ...
            Inputs are tokens[:, :-1], targets tokens[:, 1:].
          mask: float32 (N, max_length + 1): 1 where the target is a word or the <eos>.
        """
        tokens = np.full((len(token_lists), max_length + 2), PAD_ID, np.int32)
        mask = np.zeros((len(token_lists), max_length + 1), np.float32)
        for row, words in enumerate(token_lists):
            ids = self.encode(list(words)[:max_length])
            tokens[row, 0] = BOS_ID
            tokens[row, 1:len(ids) + 1] = ids
            tokens[row, len(ids) + 1] = EOS_ID
            mask[row, :len(ids) + 1] = 1.0
        return tokens, mask

    # -- persistence -------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"words": self.words, "min_count": self.min_count}

    def save(self, path: str) -> str:
        """Writes the vocabulary as JSON (atomically: a reader never sees half a file)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_json(), f, indent=0)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        with open(path) as f:
            data = json.load(f)
        return cls(data["words"], data.get("min_count", 1))
