"""Checking a corpus handed to the NLG metrics, and the one normalisation every metric shares.

A corpus is ``hypotheses[i]`` (one system output) and ``references[i]`` (all human references
of input ``i``, any number >= 1).
"""

from __future__ import annotations

from collections.abc import Sequence

from autolora_exp.errors import UserError


class MetricInputError(UserError, ValueError):
    """A corpus the NLG metrics cannot score (empty, misaligned, a missing reference).

    A ``ValueError`` for callers that treat it as bad data, a ``UserError`` so that the app
    prints it as one line.
    """


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace (line breaks included) into one space and strip the ends.

    The official scripts read one text per line from files: a line break inside a text would
    shift every later line (the METEOR jar then stops with "test and reference not same
    length", the PTB tokenizer misaligns captions). All metrics here split on whitespace
    anyway, so this changes no score of a text without line breaks.
    """
    return " ".join(text.split())


def check_corpus(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[list[str], list[list[str]]]:
    """Validate a corpus and return it whitespace-normalised (see :func:`normalize_whitespace`).

    Raises :class:`MetricInputError` for: no hypotheses, a different number of hypotheses and
    reference lists, a non-string text, an input without references, or a blank reference
    (the official reference files cannot hold one: a blank line separates inputs in
    e2e-metrics and means "no reference in this slot" in GenerationEval).
    """
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise MetricInputError(
            "hypotheses must be a list of str and references a list of lists of str, got a bare str"
        )
    hypotheses, references = list(hypotheses), list(references)
    if not hypotheses:
        raise MetricInputError("hypotheses is empty: need at least one hypothesis to score")
    if len(hypotheses) != len(references):
        raise MetricInputError(
            f"{len(hypotheses)} hypotheses but {len(references)} reference lists: "
            "need exactly one list of references per hypothesis"
        )
    hyps: list[str] = []
    refs: list[list[str]] = []
    for i, (hyp, ref_list) in enumerate(zip(hypotheses, references)):
        if not isinstance(hyp, str):
            raise MetricInputError(f"hypotheses[{i}] is {type(hyp).__name__}, expected str")
        if isinstance(ref_list, str) or not isinstance(ref_list, Sequence):
            raise MetricInputError(
                f"references[{i}] is {type(ref_list).__name__}, expected a list of str (all references of input {i})"
            )
        if len(ref_list) == 0:
            raise MetricInputError(f"references[{i}] is empty: every input needs at least one reference")
        clean: list[str] = []
        for j, ref in enumerate(ref_list):
            if not isinstance(ref, str):
                raise MetricInputError(f"references[{i}][{j}] is {type(ref).__name__}, expected str")
            ref = normalize_whitespace(ref)
            if not ref:
                raise MetricInputError(
                    f"references[{i}][{j}] is blank: give only real references (any number >= 1 per input)"
                )
            clean.append(ref)
        hyps.append(normalize_whitespace(hyp))
        refs.append(clean)
    return hyps, refs
