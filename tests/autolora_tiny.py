"""Tiny models and batches shared by the AutoLoRA tests (not a test module itself)."""

from __future__ import annotations

import torch
from transformers import RobertaConfig, RobertaForSequenceClassification

VOCAB, SEQ, LABELS = 100, 10, 3


def tiny_roberta(layers: int = 2, dropout: float = 0.0, attn: str = "eager", seed: int = 0):
    """A randomly initialised RoBERTa classifier with the real module names (query/value)."""
    torch.manual_seed(seed)
    cfg = RobertaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=SEQ + 4,
        num_labels=LABELS,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        attn_implementation=attn,
    )
    return RobertaForSequenceClassification(cfg)


def batches(n: int, seed: int, size: int = 4, tag: str | None = None) -> list[dict]:
    """``n`` random classification batches; ``tag`` adds a 'tag' entry naming each batch."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        b = {
            "input_ids": torch.randint(3, VOCAB, (size, SEQ), generator=g),
            "labels": torch.randint(0, LABELS, (size,), generator=g),
        }
        if tag is not None:
            b["tag"] = f"{tag}{i}"
        out.append(b)
    return out


def randomise_lora(layers, seed: int = 1, scale: float = 0.3) -> None:
    """Non-zero B and non-uniform beta so every term of the hypergradient is non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * scale)
            layer.selection_logits.copy_(torch.randn(layer.selection_logits.shape, generator=g) * 0.5)
