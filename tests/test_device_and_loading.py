"""The device is chosen once and never falls back to CPU silently; sweep jobs spread over GPUs;
length-grouped batches are seeded, complete and resumable; the search's batch size is its own key."""

from __future__ import annotations


import pytest
import torch

from autolora_exp.data.length_grouping import LengthGroupedBatchSampler
from autolora_exp.device import describe_device, device_line, hidden_gpu_reason, resolve_device
from autolora_exp.errors import UserError
from autolora_exp.methods.autolora import SearchConfig
from autolora_exp.train import epoch_batches


def test_auto_says_so_when_a_launcher_hid_the_gpus(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "CUDA_VISIBLE_DEVICES=''" in hidden_gpu_reason()
    assert resolve_device("auto") == torch.device("cpu")
    assert "warning: device=auto runs on CPU: CUDA_VISIBLE_DEVICES='' hides every GPU" in capsys.readouterr().out
    with pytest.raises(UserError, match="no CUDA device is available .*hides every GPU"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="'tpu' is not one of auto, cpu, cuda, cuda:<n>"):
        resolve_device("tpu")


def test_auto_is_quiet_on_a_machine_without_gpus(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    assert resolve_device("auto") == torch.device("cpu") and hidden_gpu_reason() is None
    assert "warning" not in capsys.readouterr().out


def test_sweep_jobs_take_one_gpu_each(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [resolve_device("auto", j) for j in range(6)] == [torch.device(f"cuda:{j % 4}") for j in range(6)]
    assert resolve_device("auto") == torch.device("cuda")  # a single run: the current GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", 3) == torch.device("cuda")  # SLURM: each job sees its own GPU


def test_cpu_device_is_described_in_one_line():
    info = describe_device(torch.device("cpu"), "bf16", None)
    assert info["precision"] == "bf16" and info["count"] == 1 and info["threads"] >= 1
    line = device_line(info)
    assert line.startswith("device: cpu (") and "precision bf16" in line and "attention default" in line


LENGTHS = [5, 40, 7, 33, 12, 1, 28, 9, 50, 3, 21, 17, 8, 44, 2, 30, 11, 6, 25, 19]


def _batches(seed: int, mega: int = 50) -> list[list[int]]:
    return list(LengthGroupedBatchSampler(LENGTHS, 4, torch.Generator().manual_seed(seed), mega_factor=mega))


def test_length_groups_cover_every_row_once_in_similar_lengths():
    batches = _batches(0)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert len(batches) == 5
    # one megabatch (50 x 4 > 20 rows): the batches are the sorted lengths cut in fours
    spans = sorted(tuple(sorted(LENGTHS[i] for i in b)) for b in batches)
    assert spans == sorted(tuple(sorted(LENGTHS)[i:i + 4]) for i in range(0, 20, 4))
    assert max(LENGTHS[i] for i in batches[0]) == max(LENGTHS)  # the longest batch first
    assert _batches(0) == batches and _batches(1) != batches  # seeded
    small = _batches(0, mega=1)  # megabatches of one batch: random batches, sorted within
    assert sorted(i for b in small for i in b) == list(range(len(LENGTHS)))


def test_group_by_length_loader_is_resumable_per_epoch():
    """train.epoch_batches reseeds the loader per epoch: a resumed epoch skips to the same batches."""
    from types import SimpleNamespace

    from autolora_exp.task_types.base import TaskKind

    class Rows(TaskKind):
        def collate(self, rows):
            return [r["idx"] for r in rows]

    data = [{"idx": i, "input_ids": [0] * n} for i, n in enumerate(LENGTHS)]

    class Dataset(list):
        def __getitem__(self, key):
            return [r[key] for r in self] if isinstance(key, str) else list.__getitem__(self, key)

    kind = Rows(SimpleNamespace(), None, None)
    loader = kind.loader(Dataset(data), 4, True, seed=3, group_by_length=True)
    epoch2 = list(epoch_batches(loader, 2))
    assert list(epoch_batches(loader, 2, skip=2)) == epoch2[2:]
    assert list(epoch_batches(loader, 1)) != epoch2
    for batch in epoch2:
        lengths = sorted(LENGTHS[i] for i in batch)
        assert lengths == sorted(LENGTHS)[sorted(LENGTHS).index(lengths[0]):][:len(lengths)]


def test_search_batch_size_is_its_own_key():
    assert SearchConfig().batch_size is None
    with pytest.raises(UserError, match="batch_size=0"):
        SearchConfig(batch_size=0)


def test_search_batch_size_reaches_the_search_loaders_and_the_device_is_resolved_once(make_cfg, monkeypatch, capsys):
    import autolora_exp.pipeline as pipeline
    from autolora_exp.pipeline import run

    calls = []
    real = pipeline.resolve_device
    monkeypatch.setattr(pipeline, "resolve_device", lambda *a: calls.append(a) or real(*a))
    cfg = make_cfg("debug=default", "model=tiny-roberta", "method=autolora", "method.search.batch_size=4",
                   "train.batch_size=8", "train.max_steps=null")
    result = run(cfg)
    n_tr = result["search"]["split"]["d_tr"]["rows"]
    assert result["search"]["steps"] == -(-n_tr // 4) * cfg.method.search.epochs  # batches of 4, not 8
    assert result["env"]["device_info"]["precision"] == "fp32"
    assert len(calls) == 1 and capsys.readouterr().out.count("device: cpu (") == 1
