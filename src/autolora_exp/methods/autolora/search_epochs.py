"""AutoLoRA's search length per task: ``${autolora_search_epochs:<task>,<train.epochs>,<train.search_epochs>}``.

The paper does not state the search's length; the authors' scripts (ruz048/AutoLoRA @314c6f4)
search 20 epochs on GLUE (``glue_search.sh:13``, ``--num_train_epochs 20``) and 50 on BioNLP
(``run_bionlp_search.py:66``). Other tasks search as many epochs as the retrain
(``train.epochs``). A scale preset (conf/debug/*.yaml) sets ``train.search_epochs`` to make
every search that long instead. conf/method/autolora.yaml sets
``search.epochs: ${autolora_search_epochs:${task.name},${train.epochs},${train.search_epochs}}``;
the resolver is registered when this package is imported (``schema.register`` discovers it).
"""

from __future__ import annotations

from omegaconf import OmegaConf

#: task name (or a ``<family>/`` prefix) -> the authors' search epochs, with their source
AUTHORS_SEARCH_EPOCHS: dict[str, int] = {
    "glue/": 20,   # glue_search.sh:13 (every GLUE task)
    "bionlp": 50,  # run_bionlp_search.py:66
}


def search_epochs(task_name: str, train_epochs: int, scale_epochs: int | None = None) -> int:
    """The search's epochs: the scale preset's ``scale_epochs`` when set, else the authors'
    value for the task, else the retrain's ``train_epochs``."""
    if scale_epochs is not None:
        return int(scale_epochs)
    for key, epochs in AUTHORS_SEARCH_EPOCHS.items():
        if task_name == key or (key.endswith("/") and task_name.startswith(key)):
            return epochs
    return int(train_epochs)


def register_search_epochs_resolver() -> None:
    """``${autolora_search_epochs:...}`` (idempotent)."""
    OmegaConf.register_new_resolver("autolora_search_epochs", search_epochs, replace=True)
