"""Word-level tags <-> sub-token model inputs, for pre-split (word-tokenised) sequence labelling.

Convention (METRICS.md, as in the BERT NER recipe): a word's tag is predicted on its **first
sub-token**; the other sub-tokens and the special tokens get -100 (ignored by the loss).

Long sentences are never cut: a sentence longer than ``max_length`` becomes several overlapping
windows (the tokenizer's ``return_overflowing_tokens`` with ``stride`` shared sub-tokens). A word's
first sub-token can then sit in two windows; it is labelled, and later read back, in exactly one of
them, the one where it has the most context (:func:`scoring_positions`). So every word of every
sentence is trained on once and scored once.

Byte-level BPE tokenizers (RoBERTa, GPT-2) must be loaded with ``add_prefix_space=True`` for
pre-split input: each word is then encoded as it is in running text (``"Ġgene"``), not as the start of
a text (``"gene"``), which would give the model token sequences it never saw in pre-training.
Transformers 5 no longer refuses this case, so :func:`check_pretokenized_support` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from autolora_exp.errors import UserError

IGNORE_INDEX = -100  # label of positions the loss skips (torch.nn.CrossEntropyLoss's default ignore_index)
NO_WORD = -1  # word id of special tokens (the tokenizer's None) and of a window's leading word fragment


def _byte_level_without_prefix_space(pre_tokenizer: dict | None) -> bool:
    if not pre_tokenizer:
        return False
    if pre_tokenizer.get("type") == "Sequence":
        return any(_byte_level_without_prefix_space(p) for p in pre_tokenizer.get("pretokenizers", []))
    return pre_tokenizer.get("type") == "ByteLevel" and not pre_tokenizer.get("add_prefix_space", False)


def check_pretokenized_support(tokenizer: Any) -> None:
    """Raise UserError unless ``tokenizer`` can encode pre-split words correctly.

    It must be a fast (Rust-backed) tokenizer, since word ids come from its encodings, and a
    byte-level BPE pre-tokenizer must add the prefix space (see the module docstring).
    """
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"tokenizer {name!r} is not a fast tokenizer; word alignment needs one "
                        "(AutoTokenizer.from_pretrained(..., use_fast=True))")
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    state = json.loads(pre_tokenizer.__getstate__()) if pre_tokenizer is not None else None
    if _byte_level_without_prefix_space(state):
        raise UserError(f"tokenizer {name!r} is a byte-level BPE (RoBERTa/GPT-2 style) without "
                        "add_prefix_space=True; load it with AutoTokenizer.from_pretrained(..., "
                        "add_prefix_space=True) so pre-split words are encoded as in running text")


def tokenize_and_align(tokenizer: Any, tokens_batch: Sequence[Sequence[str]],
                       tags_batch: Sequence[Sequence[int]] | None, max_length: int, stride: int,
                       sentence_index: Sequence[int] | None = None) -> dict[str, list]:
    """Encode a batch of word lists into windows of at most ``max_length`` sub-tokens.

    Returns one row per window (a sentence gives >= 1 window), usable in ``Dataset.map(batched=True)``
    with the input columns removed:

    - ``input_ids``, ``attention_mask`` (+ ``token_type_ids`` if the tokenizer makes them): unpadded.
    - ``labels``: the word's tag id on its first sub-token in the window chosen for it, -100 elsewhere
      (omitted when ``tags_batch`` is None, e.g. at prediction time).
    - ``word_ids``: per position, the index of the word it belongs to, or -1 for special tokens and
      for the leading fragment of a window that starts inside a word (that word's first sub-token
      lies in an earlier window). So in every window, the first position of each word id is that
      word's true first sub-token.
    - ``overflow_to_sample_mapping``: the window's sentence, as a position in this batch.
    - ``sentence_index``: the window's sentence as ``sentence_index[...]`` (default: the batch
      position); pass the dataset's row indices (``Dataset.map(..., with_indices=True)``) to get
      dataset-wide sentence ids for :func:`word_predictions`.

    A word the tokenizer turns into no sub-token at all (an empty string, a lone zero-width or
    control character) is encoded as the tokenizer's unknown token, so it still gets a prediction.
    """
    check_pretokenized_support(tokenizer)
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    if not isinstance(max_length, int) or max_length - n_special < 1:
        raise UserError(f"task.max_length={max_length!r} must be an int > {n_special} (the tokenizer adds "
                        f"{n_special} special tokens per window)")
    window_content = max_length - n_special
    if not isinstance(stride, int) or not 0 <= stride < window_content:
        raise UserError(f"task.stride={stride!r} must be an int in [0, {window_content}) for "
                        f"task.max_length={max_length} "
                        f"({n_special} special tokens): windows must advance")
    # Plain lists: a datasets Column re-reads Arrow on every index, and the tokenizer rejects it.
    words = [list(sentence) for sentence in tokens_batch]
    if tags_batch is not None:
        tags_batch = [list(tags) for tags in tags_batch]
        if len(tags_batch) != len(words):
            raise ValueError(f"{len(words)} sentences but {len(tags_batch)} tag sequences")
        for s, (sentence, tags) in enumerate(zip(words, tags_batch)):
            if len(sentence) != len(tags):
                raise ValueError(f"sentence {s}: {len(sentence)} words but {len(tags)} tags")
    if sentence_index is None:
        sentence_index = range(len(words))
    elif len(sentence_index) != len(words):
        raise ValueError(f"{len(words)} sentences but {len(sentence_index)} sentence_index entries")

    for _attempt in range(2):
        encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                             stride=stride, return_overflowing_tokens=True)
        word_ids, unseen = _window_word_ids(encoding, window_content, stride, [len(s) for s in words])
        if not unseen:
            break
        if tokenizer.unk_token is None:
            s, w = unseen[0]
            raise UserError(f"word {words[s][w]!r} (sentence {s}) gives no sub-token and tokenizer "
                            f"{tokenizer.name_or_path!r} has no unknown token to stand in for it")
        for s, w in unseen:
            words[s][w] = tokenizer.unk_token
    else:  # the unknown token itself gave no sub-token
        raise RuntimeError(f"words {unseen[:5]} still give no sub-token after substituting "
                           f"{tokenizer.unk_token!r}")

    window_to_sentence = list(encoding["overflow_to_sample_mapping"])
    out: dict[str, list] = {key: list(encoding[key]) for key in ("input_ids", "attention_mask", "token_type_ids")
                            if key in encoding}
    if tags_batch is not None:
        labels = [[IGNORE_INDEX] * len(ids) for ids in word_ids]
        for (s, w), (k, p) in scoring_positions(word_ids, window_to_sentence).items():
            labels[k][p] = int(tags_batch[s][w])
        out["labels"] = labels
    out["word_ids"] = word_ids
    out["overflow_to_sample_mapping"] = window_to_sentence
    out["sentence_index"] = [int(sentence_index[s]) for s in window_to_sentence]
    return out


def _window_word_ids(encoding: Any, window_content: int, stride: int,
                     n_words: list[int]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Word ids per window, with each window's leading fragment of a split word set to -1.

    The tokenizer cuts a sentence's sub-token stream into windows of ``window_content`` content
    tokens, window j starting at ``j * (window_content - stride)``. The stream is rebuilt from the
    windows (the overlaps must agree, which checks that arithmetic); a window whose first token
    continues the word of the stream's previous token starts inside that word.
    Also returns (sentence, word) pairs that have no sub-token anywhere.
    """
    mapping = encoding["overflow_to_sample_mapping"]
    result: list[list[int]] = []
    stream_ids: list[int] = []
    stream_words: list[int] = []
    unseen: list[tuple[int, int]] = []
    start = 0

    def close(sentence: int) -> None:
        present = set(stream_words)
        unseen.extend((sentence, w) for w in range(n_words[sentence]) if w not in present)

    for k, sentence in enumerate(mapping):
        if k == 0 or mapping[k - 1] != sentence:
            if k > 0:
                close(mapping[k - 1])
            stream_ids, stream_words, start = [], [], 0
        else:
            start += window_content - stride
        raw = encoding.word_ids(k)
        content = [p for p, w in enumerate(raw) if w is not None]
        ids = [encoding["input_ids"][k][p] for p in content]
        words = [raw[p] for p in content]
        overlap = len(stream_ids) - start
        if overlap < 0 or stream_ids[start:] != ids[:overlap] or stream_words[start:] != words[:overlap]:
            raise RuntimeError(f"window {k} of sentence {sentence} does not continue the previous window "
                               f"with a {stride}-token overlap; this tokenizer's overflow windows are "
                               "not supported")
        stream_ids += ids[overlap:]
        stream_words += words[overlap:]
        row = [NO_WORD if w is None else w for w in raw]
        if start > 0 and content:  # does the window open inside the word of the token before it?
            before = stream_words[start - 1]
            for p in content:
                if raw[p] != before:
                    break
                row[p] = NO_WORD
        result.append(row)
    if len(mapping):
        close(mapping[-1])
    return result, unseen


def scoring_positions(word_ids_per_window: Sequence[Sequence[int | None]],
                      window_to_sentence: Sequence[int]) -> dict[tuple[int, int], tuple[int, int]]:
    """``(sentence, word) -> (window, position)`` of the one sub-token that carries the word's tag.

    Candidates: in each window, the first position of each word id (-1/None are not words).
    Rule (the "maximum context" rule of BERT's SQuAD windows): pick the window where
    ``min(left, right)`` is largest, with ``left``/``right`` the number of word-bearing positions of
    that window before/after the candidate; ties go to the earliest window. Training
    (:func:`tokenize_and_align`) and decoding (:func:`word_predictions`) both call this, so the
    position a word is trained on is the position it is read from.
    """
    if len(word_ids_per_window) != len(window_to_sentence):
        raise ValueError(f"{len(word_ids_per_window)} windows of word ids but "
                         f"{len(window_to_sentence)} window_to_sentence entries")
    best: dict[tuple[int, int], tuple[int, int, int]] = {}
    for k, (ids, sentence) in enumerate(zip(word_ids_per_window, window_to_sentence)):
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        positions = [p for p, w in enumerate(ids) if w is not None and w >= 0]
        if not positions:
            continue
        first, last = positions[0], positions[-1]
        seen: set[int] = set()
        for p in positions:
            w = int(ids[p])
            if w in seen:
                continue
            seen.add(w)
            context = min(p - first, last - p)
            key = (int(sentence), w)
            if key not in best or context > best[key][0]:
                best[key] = (context, k, p)
    return {key: (k, p) for key, (_, k, p) in best.items()}


def word_predictions(token_predictions: Sequence[Sequence[int]], word_ids_per_window: Sequence[Sequence[int]],
                     window_to_sentence: Sequence[int], n_words_per_sentence: Sequence[int]) -> list[list[int]]:
    """One predicted tag id per original word: the token-level prediction (argmax) at the position
    :func:`scoring_positions` assigns to the word.

    ``token_predictions[k]`` must index the same positions as ``word_ids_per_window[k]`` (right
    padding beyond them is ignored). ``window_to_sentence[k]`` is the window's sentence in
    ``0..len(n_words_per_sentence)-1``. A word with no position in any window is an error, never a
    silent gap in the score.
    """
    if not len(token_predictions) == len(word_ids_per_window) == len(window_to_sentence):
        raise ValueError(f"{len(token_predictions)} prediction rows, {len(word_ids_per_window)} word-id rows "
                         f"and {len(window_to_sentence)} window_to_sentence entries must be equal")
    out: list[list[int | None]] = [[None] * int(n) for n in n_words_per_sentence]
    for (s, w), (k, p) in scoring_positions(word_ids_per_window, window_to_sentence).items():
        if not 0 <= s < len(out):
            raise ValueError(f"window {k} belongs to sentence {s}, but there are {len(out)} sentences")
        if w >= len(out[s]):
            raise ValueError(f"window {k} has word {w}, but sentence {s} has {len(out[s])} words")
        row = token_predictions[k]
        if p >= len(row):
            raise ValueError(f"window {k}: {len(row)} predictions, but word {w} sits at position {p}")
        out[s][w] = int(row[p])
    missing = [(s, w) for s, row in enumerate(out) for w, value in enumerate(row) if value is None]
    if missing:
        raise ValueError(f"{len(missing)} words have no sub-token in any window, e.g. (sentence, word) "
                         f"{missing[:5]}")
    return out  # type: ignore[return-value]
