"""The Java side of the NLG metrics: finding ``java`` and the jars that ``pycocoevalcap==1.2`` ships.

METEOR 1.5 (``meteor-1.5.jar`` with its English paraphrase table) and the Stanford PTB
tokenizer (``stanford-corenlp-3.4.1.jar``) are Java programs; the official scripts spawn them
the same way.

Metrics that run them are marked with :func:`needs_java`; the pipeline calls
:func:`check_java_for` at setup, so a missing or broken Java stops the run before the data and
the model are loaded, not at the first evaluation after an epoch of training.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, TypeVar

from autolora_exp.errors import UserError

# Which reported numbers need Java, for the error message when it is missing.
JAVA_METRICS = "METEOR (E2E and WebNLG) and the PTB tokenisation behind E2E ROUGE-L and CIDEr"

# The default charset of Java 17 follows the locale (ASCII under LANG=C); the official runs
# read and wrote UTF-8, so pin it rather than inherit the caller's locale.
JAVA_OPTIONS = ("-Dfile.encoding=UTF-8",)
JAVA_FIX = ("install a Java runtime (e.g. apt-get install default-jre-headless, or `module load java` on a cluster) "
            "or set JAVA_HOME to one")

F = TypeVar("F", bound=Callable[..., Any])


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` when JAVA_HOME names a Java installation, else ``java`` on PATH;
    a :class:`UserError` naming what needs it when there is neither."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    java = shutil.which("java")
    if java is None:
        also = f", and JAVA_HOME={home} has no bin/java" if home else ""
        raise UserError(f"java not found on PATH{also}: {JAVA_METRICS} run the METEOR 1.5 and Stanford PTB jars; "
                        f"{JAVA_FIX}")
    return java


@functools.cache
def java_version(java: str) -> str:
    """The first line ``java -version`` prints (e.g. ``openjdk version "17.0.13" 2024-10-15``);
    a :class:`UserError` when that program does not run."""
    try:
        proc = subprocess.run([java, "-version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"{java} does not run ({type(err).__name__}: {err}): {JAVA_METRICS} need it; {JAVA_FIX}") from None
    text = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        tail = " ".join(text.split())[-300:]
        raise UserError(f"{java} -version failed (exit {proc.returncode}: {tail}): {JAVA_METRICS} need a working "
                        f"Java; {JAVA_FIX}")
    return text.splitlines()[0] if text else "java (version not printed)"


def needs_java(metric: F) -> F:
    """Mark a metric that runs the Java programs (see :func:`check_java_for`)."""
    metric.needs_java = True  # type: ignore[attr-defined]
    return metric


def check_java_for(metric: Callable[..., Any], user: str) -> str | None:
    """At setup: when ``metric`` (or the function of a ``functools.partial``) is marked with
    :func:`needs_java`, check that Java runs and that the jars are installed; returns the Java
    version line (``None`` for a metric without Java). Errors are one line naming ``user``."""
    func = metric.func if isinstance(metric, functools.partial) else metric
    if not getattr(func, "needs_java", False):
        return None
    try:
        java = java_executable()
        version = java_version(java)
        meteor_jar()
        ptb_tokenizer_jar()
    except UserError as err:
        raise UserError(f"{user} is scored with Java programs: {err}") from None
    return f"{version} ({java})"


def _pycocoevalcap_dir() -> Path:
    spec = find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("pycocoevalcap is not installed: pip install pycocoevalcap==1.2 (it ships the METEOR and PTB jars)")
    return Path(list(spec.submodule_search_locations)[0])


def meteor_jar() -> Path:
    """``meteor-1.5.jar``; it finds ``data/paraphrase-en.gz`` next to itself."""
    jar = _pycocoevalcap_dir() / "meteor" / "meteor-1.5.jar"
    if not (jar.is_file() and (jar.parent / "data" / "paraphrase-en.gz").is_file()):
        raise UserError(f"METEOR 1.5 jar or its paraphrase table missing under {jar.parent}: reinstall pycocoevalcap==1.2")
    return jar


def ptb_tokenizer_jar() -> Path:
    """``stanford-corenlp-3.4.1.jar``, which holds ``edu.stanford.nlp.process.PTBTokenizer``."""
    jar = _pycocoevalcap_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    if not jar.is_file():
        raise UserError(f"Stanford PTB tokenizer jar missing: {jar}; reinstall pycocoevalcap==1.2")
    return jar


def run_java(args: list[str], *, cwd: Path, what: str) -> tuple[str, str]:
    """Run ``java <JAVA_OPTIONS> <args>`` to completion and return its (stdout, stderr) as UTF-8.

    A non-zero exit is a ``RuntimeError`` carrying the tail of the program's stderr.
    """
    proc = subprocess.run(
        [java_executable(), *JAVA_OPTIONS, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {proc.stderr.decode('utf-8', 'replace')[-2000:]}")
    return proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", "replace")
