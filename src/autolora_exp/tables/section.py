"""What one experiment contributes to the output: its tables, figures and the runs behind them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autolora_exp.tables.load import Failure
from autolora_exp.tables.render import Table

#: a figure: writes a PNG to the path it is given and returns the path
FigureWriter = Callable[[Path], Path]


@dataclass
class Section:
    experiment: str
    title: str
    tables: list[Table] = field(default_factory=list)
    #: file name (relative to the section's folder) -> writer
    figures: dict[str, FigureWriter] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    #: layout cells with neither a result nor a failure record
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: int = 0
