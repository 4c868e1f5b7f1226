"""The Java side of the NLG metrics: finding ``java`` and the jars that ``pycocoevalcap==1.2`` ships.

METEOR 1.5 (``meteor-1.5.jar`` with its English paraphrase table) and the Stanford PTB
tokenizer (``stanford-corenlp-3.4.1.jar``) are Java programs; the official scripts spawn them
the same way.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path

from autolora_exp.errors import UserError

# Which reported numbers need Java, for the error message when it is missing.
JAVA_METRICS = "METEOR (E2E and WebNLG) and the PTB tokenisation behind E2E ROUGE-L and CIDEr"

# The default charset of Java 17 follows the locale (ASCII under LANG=C); the official runs
# read and wrote UTF-8, so pin it rather than inherit the caller's locale.
JAVA_OPTIONS = ("-Dfile.encoding=UTF-8",)


def java_executable() -> str:
    """Path of ``java`` on PATH, or a :class:`UserError` naming what needs it."""
    java = shutil.which("java")
    if java is None:
        raise UserError(
            f"java not found on PATH: {JAVA_METRICS} run the METEOR 1.5 and Stanford PTB jars; "
            "install a Java runtime (e.g. apt-get install default-jre-headless)"
        )
    return java


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
