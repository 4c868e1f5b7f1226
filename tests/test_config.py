"""Every option of every config group composes and instantiates; bad input fails clearly."""

from __future__ import annotations

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate

from autolora_exp.validation import validate_config
from conftest import CONF_DIR, compose


def _options(loader, group: str) -> list[str]:
    """Options of ``group`` including nested groups (``task`` -> ``glue/rte``): Hydra's own
    listing does not descend, which is how a ``glob`` sweep silently launches nothing."""
    options = list(loader.get_group_options(group))
    for sub in loader.list_groups(group):
        options += [f"{sub}/{o}" for o in _options(loader, f"{group}/{sub}")]
    return sorted(options)


def all_groups() -> dict[str, list[str]]:
    """Every selectable top-level group of the app (``schema`` and ``hydra`` are internals)."""
    from hydra import initialize_config_dir

    compose([])  # registers the schemas
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return {g: _options(loader, g) for g in loader.list_groups("") if g not in ("schema", "hydra")}


GROUPS = all_groups()
CASES = [(g, o) for g, opts in GROUPS.items() for o in opts]


def test_groups_found():
    # guards the enumeration itself: an empty walk would make every other test vacuous
    assert {"task", "model", "method", "debug"} <= set(GROUPS)
    assert "glue/rte" in GROUPS["task"] and "lora" in GROUPS["method"]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose([f"{group}={option}"], tmp_path)
    validate_config(cfg)  # every shipped value passes the schema's rules
    method = instantiate(cfg.method)
    assert method.name == cfg.method.name
    metric = instantiate(cfg.task.metric)
    assert callable(metric)
    loader = instantiate(cfg.task.loader, _partial_=True)
    assert callable(loader)
    assert cfg.model.name and cfg.task.name


def test_task_selects_paper_model_and_model_overrides():
    assert compose(["task=glue/rte"]).model.name == "roberta-base"
    assert compose([]).model.name == "minilm"
    assert compose(["task=glue/rte", "model=minilm"]).model.name == "minilm"


def test_misspelt_key_names_the_path():
    with pytest.raises(ConfigCompositionException) as err:
        compose(["method.rr=4"])
    assert "method.rr" in str(err.value)
    assert "full_key: method.rr" in str(err.value.__cause__) and "LoRAConfig" in str(err.value.__cause__)


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as err:
        compose(["train.epochs=three"])
    assert "full_key: train.epochs" in str(err.value.__cause__) and "'three'" in str(err.value.__cause__)


@pytest.mark.parametrize("override", ["task=glue/nope", "method=nope", "model=nope"])
def test_unknown_group_option_lists_choices(override):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        compose([override])
    assert "nope" in str(err.value)
