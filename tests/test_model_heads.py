"""Every task's head and target modules exist in the model it builds, for the packaged MiniLM.

The head depends on the task kind as well as the model: BERT's sequence-classification model
has a pooler (trained with the classifier), its token-classification model has none. A name
that matches nothing would make the adapter and AutoLoRA refuse to run, so it is checked here
on the real model classes.
"""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from autolora_exp.kinds import make_kind
from autolora_exp.models import check_target_modules, load_backbone, load_tokenizer

from conftest import compose


@pytest.mark.parametrize("task", ["bbc_news", "wnut16", "bionlp", "glue/rte", "glue/stsb"])
def test_minilm_heads_and_targets_exist_for_every_task_kind(task, tmp_path):
    cfg = compose([f"task={task}", "model=minilm"], tmp_path)
    tokenizer = load_tokenizer(cfg.model, cfg.task.kind)
    kind = make_kind(cfg.task, tokenizer, instantiate(cfg.task.metric))
    model = load_backbone(cfg.model, tokenizer, kind.auto_class, kind.head_kwargs())
    heads = check_target_modules(model, list(cfg.model.head_modules))
    assert any(h.endswith("classifier") for h in heads)
    assert ("bert.pooler" in heads) == (cfg.task.kind != "token_classification")
    assert len(check_target_modules(model, list(cfg.model.target_modules))) == 12  # 6 blocks x (q, v)
