"""The ONNX Runtime encoder gives sentence-transformers' vectors, text by text.

sentence-transformers (torch) is the reference; it is installed by `make test` only
(the `bench` extra), never for the product.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the 'embed' extra is not installed")
pytest.importorskip("sentence_transformers", reason="the 'bench' extra is not installed")

from actors.local.bert_onnx import SentenceEncoder
from actors.local.requests import EMBEDDING_DIMENSIONS, default_embedding_model_dir

LONG = " ".join(f"word{i} and some prose about lighthouses, storms and ships." for i in range(120))
TEXTS = [
    "A cat sat on the mat.",
    "A CAT SAT ON THE MAT.",  # the tokenizer lowercases: the same tokens as above
    "",
    " ",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\r\nlines",
    "Punctuation!!! ??? ... ;;; --- (brackets) [more] {braces} <angle> 'quotes' \"double\"",
    "Numbers: 3.14159, 1e-9, -42, 1,000,000 and 2026-11-30T20:00:00Z",
    "Café crème brûlée, naïve façade, Ångström, Straße",
    "Съешь же ещё этих мягких французских булок",
    "日本語のテキストと中文文本混在",
    "مرحبا بالعالم",
    "emoji 😀🚀🎉 and symbols ∑∫√∞ ≠ ≤ ©®™",
    "zero\u200bwidth\u00a0nbsp and combining e\u0301",
    "UPPER CASE SHOUTING",
    "x" * 600,  # one long unknown-ish word
    LONG,  # about 1,600 tokens: truncated at 256
    LONG[:700],  # about 150 tokens
    "The quick brown fox jumps over the lazy dog. " * 20,
    "def f(x):\n    return {'a': [1, 2, 3]}  # code",
    "https://example.com/path?query=1&b=2#frag user@example.com",
    "Stock markets fell sharply today.",
]


@pytest.fixture(scope="module")
def engines() -> tuple[SentenceEncoder, Any]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model_dir = default_embedding_model_dir()
    reference = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return SentenceEncoder(model_dir, threads=1, batch_size=8), reference


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_every_text_matches_sentence_transformers(engines: tuple[SentenceEncoder, Any]) -> None:
    """One call: sorted by length, batches of 8 padded to their longest text."""
    onnx, reference = engines
    ours, counts = onnx.encode(TEXTS)
    ref = reference.encode(TEXTS, batch_size=8, convert_to_numpy=True)
    assert ours.shape == ref.shape == (len(TEXTS), EMBEDDING_DIMENSIONS)
    cos = cosines(ours, ref)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.999, (cos.min(), TEXTS[worst][:80])
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # usage counts: the reference tokenizer's, [CLS] and [SEP] included, at most 256
    assert counts == [
        len(ids) for ids in reference.tokenizer(TEXTS, truncation=True, max_length=256)["input_ids"]
    ]
    assert max(counts) == 256 and counts[TEXTS.index("")] == 2


def test_padding_does_not_change_a_vector(engines: tuple[SentenceEncoder, Any]) -> None:
    """A text alone and the same text padded beside a 256-token one: the same vector."""
    onnx, reference = engines
    alone = np.concatenate([onnx.encode([t])[0] for t in TEXTS])
    ref_alone = np.concatenate([reference.encode([t], convert_to_numpy=True) for t in TEXTS])
    padded, _ = onnx.encode([*TEXTS, LONG])
    assert cosines(alone, padded[: len(TEXTS)]).min() >= 0.99999
    assert cosines(alone, ref_alone).min() >= 0.999


def test_the_two_spellings_of_one_sentence_are_one_vector(
    engines: tuple[SentenceEncoder, Any],
) -> None:
    """The test's own sanity check: what differs only in case embeds the same."""
    onnx, _ = engines
    v, _ = onnx.encode(TEXTS[:2] + TEXTS[-1:])
    assert cosines(v[:1], v[1:2])[0] > 0.9999
    assert cosines(v[:1], v[2:3])[0] < 0.5
