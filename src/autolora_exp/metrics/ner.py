"""Sequence-labelling metric: entity-level micro precision / recall / F1, conlleval-style (METRICS.md).

An entity is a maximal chunk of one type in IOB2 tags, read the way conlleval reads them (seqeval's
default mode, ``scheme=None, mode=None``): an ``I-X`` that does not continue an ``X`` chunk starts a
new one. A predicted entity is correct only if its type and both boundaries match a gold entity.

    precision = correct / predicted entities      recall = correct / gold entities
    F1 = 2 * precision * recall / (precision + recall)

Micro-averaged over all entities of the corpus ("micro avg" of seqeval's classification_report).
When nothing is predicted, precision is 0 (conlleval prints 0.00 too); when there are neither gold
nor predicted entities, F1 is undefined and a ValueError is raised rather than a number.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqeval.metrics import accuracy_score, classification_report
from seqeval.metrics.sequence_labeling import get_entities


def ner_metrics(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict:
    """Entity-level micro ``precision``, ``recall``, ``f1`` (fractions in [0, 1]), ``support`` (gold
    entities), token-level ``accuracy`` (a secondary number: O tokens dominate it), and
    ``per_type`` = {type: {precision, recall, f1, support}} over the types in either side.

    ``predictions[i]`` and ``references[i]`` are the tag strings of sentence i, one per word.
    """
    predictions = [list(p) for p in predictions]
    references = [list(r) for r in references]
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted sentences but {len(references)} reference sentences")
    if not references:
        raise ValueError("no sentences to score")
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        if len(pred) != len(ref):
            raise ValueError(f"sentence {i}: {len(pred)} predicted tags but {len(ref)} reference tags")
    if not get_entities(references) and not get_entities(predictions):
        raise ValueError("neither references nor predictions contain an entity: entity F1 is undefined")

    report = classification_report(references, predictions, output_dict=True, scheme=None, mode=None,
                                   zero_division=0)
    micro = report["micro avg"]
    per_type = {
        name: {"precision": float(row["precision"]), "recall": float(row["recall"]),
               "f1": float(row["f1-score"]), "support": int(row["support"])}
        for name, row in report.items() if not name.endswith(" avg")
    }
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "support": int(micro["support"]),
        "accuracy": float(accuracy_score(references, predictions)),
        "per_type": per_type,
    }
