"""Accepted values of the config keys, declared next to the field they check.

A schema field states what it accepts with :func:`accepts` instead of a bare default::

    batch_size: int = accepts(16, ge=1)                      # an integer >= 1
    warmup_ratio: float = accepts(0.06, ge=0, le=1)          # a number in [0, 1]
    gate: str = accepts("softmax", choices=GATES)            # one of softmax, none, sigmoid
    ranks: list[int] = accepts(factory=..., min_items=1, distinct=True, item=Accepts(ge=1))

Hydra already checks names and types when it composes the config; :func:`validate_config`
checks the values, once, on the composed config, before anything loads. It walks the config by
its schema dataclasses (``OmegaConf.get_type``), checks every field that declares a rule, and
then calls the schema's ``check_relations(node, prefix)`` when it has one (rules that relate
several fields, e.g. AdaLoRA's target_r < init_r). The first bad value is one
:class:`~autolora_exp.errors.UserError` naming the key, the value and what is accepted::

    train.batch_size=0 is not accepted; use an integer >= 1

Floats must be finite (nan and inf are refused) besides meeting their bounds; ``null`` is
accepted wherever the field is ``Optional`` (Hydra refuses it elsewhere).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from autolora_exp.errors import UserError

#: key of a field's :class:`Accepts` in ``dataclasses.field(metadata=...)``
METADATA_KEY = "accepts"


@dataclass(frozen=True)
class Accepts:
    """The values one config key accepts: bounds (numbers), choices, and for lists/mappings
    the item count, distinctness and a rule for each item (list) or value (mapping)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    min_items: int = 0
    max_items: int | None = None
    distinct: bool = False
    item: Accepts | None = None

    def ok(self, value: Any) -> bool:
        """Whether ``value`` (a plain Python value, interpolations resolved) is accepted."""
        if value is None:
            return True  # Optional fields only: Hydra refuses null elsewhere
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, (Mapping, Sequence)) and not isinstance(value, str):
            items = list(value.values()) if isinstance(value, Mapping) else list(value)
            if len(items) < self.min_items or (self.max_items is not None and len(items) > self.max_items):
                return False
            if self.distinct and len(set(items)) != len(items):
                return False
            return self.item is None or all(self.item.ok(x) for x in items)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                return False
            return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                    and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        return True

    def describe(self, kind: str, item_kind: str = "a value") -> str:
        """What is accepted, in words; ``kind`` names the value type ("an integer", "a number"),
        ``item_kind`` that of a list's items or a mapping's values."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if kind in ("a list", "a mapping"):
            noun = kind[2:]
            if self.max_items is None:
                words = f"a {'non-empty ' if self.min_items == 1 else ''}{noun}"
            elif self.min_items == self.max_items:
                words = f"a {self.min_items}-item {noun}"
            else:
                words = f"a {noun} of {self.min_items} to {self.max_items} items"
            words += " of distinct values" if self.distinct else ""
            if self.item is not None:
                each = "value" if kind == "a mapping" else "item"
                words += f", each {each} {self.item.describe(item_kind)}"
            return words
        low = (f"[{self.ge}" if self.ge is not None else f"({self.gt}" if self.gt is not None else None)
        high = (f"{self.le}]" if self.le is not None else f"{self.lt})" if self.lt is not None else None)
        if low and high:
            return f"{kind} in {low}, {high}"
        if low:
            return f"{kind} {'>=' if self.ge is not None else '>'} {low[1:]}"
        if high:
            return f"{kind} {'<=' if self.le is not None else '<'} {high[:-1]}"
        return "a finite number" if kind == "a number" else kind


def accepts(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A dataclass field with ``default`` (or ``factory``) that accepts the values ``rule`` allows."""
    metadata = {METADATA_KEY: Accepts(**rule)}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@cache
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


_KINDS = {int: "an integer", float: "a number", list: "a list", tuple: "a list", dict: "a mapping"}


def _kind(hint: Any) -> tuple[str, str, bool]:
    """(kind of the value, kind of its items or mapping values, whether null is accepted); a kind
    is "an integer", "a number", "a list", "a mapping" or "a value"."""
    args = typing.get_args(hint)
    nullable = type(None) in args
    if nullable:
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    item_args = typing.get_args(hint)
    item = _KINDS.get(item_args[-1], "a value") if item_args else "a value"
    return _KINDS.get(origin, "a value"), item, nullable


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else "null" if value is None else str(value)


def check_known_keys(node: DictConfig, prefix: str, schema: type) -> None:
    """Every key of ``node`` is a field of its schema. Hydra refuses an unknown key on the command
    line, but an append (``+train.epoch=3``) forces it in, and the run would then ignore it while
    its config (and digest) records it."""
    fields = [f.name for f in dataclasses.fields(schema)]
    unknown = [k for k in node.keys() if k not in fields]
    if unknown:
        k = unknown[0]
        value = _show(_plain(node._get_node(k)._value()))  # unresolved: the value as typed
        raise UserError(f"{prefix}{k}={value} is not a key of the config; the keys at "
                        f"{prefix.rstrip('.') or 'the top level'} are: {', '.join(fields)}")


def check_fields(node: Any, prefix: str = "", schema: type | None = None) -> None:
    """Check every field of ``node`` (a schema dataclass instance, or a composed config node of
    one) that declares :class:`Accepts`, then the schema's ``check_relations``; recurse into
    nested schema nodes. ``prefix`` is the node's key path (``"train."``) for the messages."""
    if schema is None:
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else type(node)
    if schema is None or not dataclasses.is_dataclass(schema):
        return
    if isinstance(node, DictConfig):
        check_known_keys(node, prefix, schema)
    for f in dataclasses.fields(schema):
        if isinstance(node, DictConfig) and f.name not in node:
            continue
        rule = f.metadata.get(METADATA_KEY)
        hint = _hints(schema)[f.name]
        if rule is None and not (hint is Any or dataclasses.is_dataclass(hint)):
            continue  # nothing to check, and nothing to resolve (e.g. a ``???`` output_dir)
        if isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, f.name):
            continue  # e.g. train.search_epochs: ${train.epochs}; the key it copies is checked itself
        value = getattr(node, f.name)
        if rule is not None:
            plain = _plain(value)
            if not rule.ok(plain):
                kind, item_kind, nullable = _kind(hint)
                use = ("null or " if nullable else "") + rule.describe(kind, item_kind)
                raise UserError(f"{prefix}{f.name}={_show(plain)} is not accepted; use {use}")
        if isinstance(value, DictConfig) or dataclasses.is_dataclass(value):
            check_fields(value, f"{prefix}{f.name}.")
    relations = getattr(schema, "check_relations", None)
    if relations is not None:
        relations(node, prefix)


def validate_config(cfg: DictConfig) -> None:
    """Every value of the composed run config against its schema (see the module docstring)."""
    check_fields(cfg)


def build(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node)`` (the config at ``key``), where a UserError raised by the
    target comes out as itself and a ``_target_`` that cannot be imported is a UserError. Hydra
    wraps both in ``InstantiationException``, which would reach the user as a crash (exit 1,
    Hydra's banner) instead of one line and exit 2."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ImportError):
            raise UserError(f"{key}._target_={node.get('_target_')!r} cannot be imported ({cause})") from None
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
