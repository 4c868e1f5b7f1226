"""Preemption is exact (issue 13 item 2; issue 16 item 3, stop checks and time-based checkpoints).

Every stop here is a real signal: sent to this process at a chosen step boundary (in-process
runs), or to a subprocess run's whole process group as SLURM, scancel, Kubernetes and a
terminal's Ctrl-C do. A stopped run, run again, must give exactly the numbers of a run that was
never stopped (CPU, bit for bit).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autolora_exp.checkpoint import Checkpointer, checkpoint_schedule
from autolora_exp.errors import UserError
from autolora_exp.pipeline import run
from autolora_exp.preemption import Preempted, StopSignal
from conftest import REPO, SHARED_DATA, compose

TINY = ["debug=default", "model=tiny-roberta", "method=lora"]
#: 2 epochs of 4 steps (32 rows, batch 8), a validation evaluation after each, then the test split
TWO_EPOCHS = [*TINY, "train.max_steps=null"]


def comparable(result: dict) -> dict:
    """Every number of a result that a stop and resume must not change."""
    metrics = result["metrics"]
    # the search entry holds the searching method's own fields (issue 18): the grid has no alphas
    return {"ranks": result["ranks"], "search": result["search"] and {k: result["search"].get(k) for k in
                                                                       ("ranks", "alphas", "steps")},
            "per_epoch": [(e["epoch"], e["step"], e["train_loss"], e["eval"]) for e in metrics["per_epoch"]],
            "final": metrics["final"], "best_epoch": metrics["best_epoch"], "test": metrics["test"]}


def signal_at_step(monkeypatch, phase: str, step: int, signum: int = signal.SIGTERM) -> list[int]:
    """Send ``signum`` to this process once, when ``phase`` reaches the boundary of ``step``
    (the loops ask their checkpointer whether a save is due at every step boundary)."""
    sent: list[int] = []
    real_due = Checkpointer.due

    def due(self, at):
        if not sent and self.phase == phase and at == step:
            sent.append(at)
            os.kill(os.getpid(), signum)
        return real_due(self, at)

    monkeypatch.setattr(Checkpointer, "due", due)
    return sent


def run_until_stopped(cfg) -> Preempted:
    with StopSignal() as stop:
        with pytest.raises(Preempted) as stopped:
            run(cfg, stop)
    return stopped.value


def resume(cfg) -> dict:
    with StopSignal() as stop:
        return run(cfg, stop)


# ---- every method, and the rank grid ----------------------------------------------------------


@pytest.mark.parametrize("method,phase,signum", [
    ("full_ft", "train", signal.SIGTERM), ("lora", "train", signal.SIGTERM), ("adalora", "train", signal.SIGTERM),
    ("adapter", "train", signal.SIGTERM), ("autolora", "search", signal.SIGUSR2), ("lora", "train", signal.SIGINT)],
    ids=["full_ft", "lora", "adalora", "adapter", "autolora-search-SIGUSR2", "lora-Ctrl-C"])
def test_every_method_stopped_mid_phase_resumes_to_the_same_result(method, phase, signum, tmp_path, monkeypatch):
    overrides = [*TWO_EPOCHS, f"method={method}"]
    uninterrupted = run(compose(overrides, tmp_path / "uninterrupted"))

    cfg = compose(overrides, tmp_path / "stopped")
    sent = signal_at_step(monkeypatch, phase, 3, signum)
    stopped = run_until_stopped(cfg)
    assert sent == [3] and (stopped.signum, stopped.phase, stopped.step) == (signum, phase, 3)
    state = torch.load(tmp_path / "stopped" / "checkpoints" / f"{phase}.pt", weights_only=False)
    assert state["step"] == 3 and not state.get("done")
    assert not (tmp_path / "stopped" / "result.json").exists()

    assert comparable(resume(cfg)) == comparable(uninterrupted)


def test_grid_stopped_inside_a_rank_gives_the_same_scores_and_best_rank(tmp_path, monkeypatch):
    """Seen before: a grid stopped mid-way picked rank 1 where the uninterrupted grid picked 8,
    because the rank being trained restarted from another RNG state."""
    overrides = [*TWO_EPOCHS, "task.max_train_samples=64", "method=lora_grid", "method.ranks=[1,2,4,8]"]
    uninterrupted = run(compose(overrides, tmp_path / "uninterrupted"))
    grid = json.loads((tmp_path / "uninterrupted" / "search.json").read_text())

    cfg = compose(overrides, tmp_path / "stopped")
    signal_at_step(monkeypatch, "search_r4", 2)  # after rank 4's 2nd of 8 steps: ranks 1 and 2 are done
    stopped = run_until_stopped(cfg)
    assert stopped.phase == "grid r=4" and stopped.step == 2
    checkpoints = tmp_path / "stopped" / "checkpoints"
    assert sorted(torch.load(checkpoints / "search.pt", weights_only=False)["per_rank"]) == [1, 2]
    assert torch.load(checkpoints / "search_r4.pt", weights_only=False)["step"] == 2

    loaded: list[tuple[str, int]] = []
    real_load = Checkpointer.load

    def load(self):
        state = real_load(self)
        if state is not None:
            loaded.append((self.phase, state["step"]))
        return state

    monkeypatch.setattr(Checkpointer, "load", load)
    resumed = resume(cfg)
    assert ("search", 2) in loaded and ("search_r4", 2) in loaded  # resumed inside rank 4, not from its start
    again = json.loads((tmp_path / "stopped" / "search.json").read_text())
    without_time = [{r: {k: v for k, v in s.items() if k != "wall_s"} for r, s in g["per_rank"].items()}
                    for g in (grid, again)]
    assert without_time[0] == without_time[1]  # every rank's D_val score, bit for bit
    assert again["best_rank"] == grid["best_rank"]
    assert comparable(resumed) == comparable(uninterrupted)


# ---- stops during evaluation, the test split and beam decoding --------------------------------


def signal_at_call(monkeypatch, owner, name: str, call: int, signum: int = signal.SIGTERM) -> list[int]:
    """Send ``signum`` to this process as the ``call``-th call of ``owner.name`` begins."""
    calls: list[int] = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(len(calls) + 1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.mark.parametrize("call,phase,step,done", [(1, "train", 4, False), (3, "test", None, True)],
                         ids=["epoch-1-validation", "test-split"])
def test_stop_during_evaluation_keeps_the_step_checkpoint_and_redoes_it(call, phase, step, done, tmp_path,
                                                                        monkeypatch):
    from autolora_exp.task_types.classification import SequenceClassification

    overrides = [*TWO_EPOCHS, "method=lora"]
    uninterrupted = run(compose(overrides, tmp_path / "uninterrupted"))

    cfg = compose(overrides, tmp_path / "stopped")
    evaluations = signal_at_call(monkeypatch, SequenceClassification, "predict", call)
    stopped = run_until_stopped(cfg)
    # evaluations 1, 2 are the validation split after epochs 1, 2; evaluation 3 is the test split.
    # "during evaluation": the stop was taken between two evaluation batches, not at the next step
    assert len(evaluations) == call and (stopped.phase, stopped.step, stopped.during) == (phase, step, "evaluation")
    assert "during evaluation, redone on resume" in str(stopped)
    state = torch.load(tmp_path / "stopped" / "checkpoints" / "train.pt", weights_only=False)
    assert state["step"] == (step or 8) and bool(state.get("done")) == done
    assert len(state["result"]["epochs"]) == (0 if step == 4 else 2)  # the cut evaluation is not recorded

    monkeypatch.undo()
    assert comparable(resume(cfg)) == comparable(uninterrupted)


def e2e_overrides() -> list[str]:
    data = SHARED_DATA / "e2e"
    if not data.is_dir():
        pytest.skip(f"{data} not found")
    return ["debug=default", "task=e2e", f"task.data_dir={data}", "model=tiny-gpt2", "task.max_length=64",
            "task.generation.num_beams=2", "task.generation.max_new_tokens=8", "train.max_steps=null",
            f"task.metric._target_={__name__}.quick_bleu", "task.test_split=null"]


@pytest.mark.parametrize("kind", ["token_classification", "generation"])
def test_every_kinds_evaluation_loop_checks_for_a_stop(kind, tmp_path, monkeypatch):
    """Sequence classification and decoding are checked above; here NER's window loop and the
    generation kind's teacher-forced loss loop stop between two batches too."""
    if kind == "token_classification":
        from autolora_exp.task_types.token_classification import TokenClassification as owner

        overrides, loop = [*TWO_EPOCHS, "task=wnut16"], "predict_windows"
    else:
        from autolora_exp.task_types.generation import CausalGeneration as owner

        overrides, loop = e2e_overrides(), "loss"
    signal_at_call(monkeypatch, owner, loop, 1)
    stopped = run_until_stopped(compose([*overrides, "method=lora"], tmp_path))
    assert (stopped.phase, stopped.during) == ("train", "evaluation")  # after epoch 1, at its last step
    state = torch.load(tmp_path / "checkpoints" / "train.pt", weights_only=False)
    assert state["step"] == stopped.step > 0 and state["result"]["epochs"] == []


def quick_bleu(hypotheses, references):
    """Corpus BLEU alone (pure Python): the Java metrics' start-up is not what is tested here."""
    from autolora_exp.metrics.nlg.mteval import corpus_bleu_13a

    return {"bleu": corpus_bleu_13a(hypotheses, references, lowercase=True)}


def test_stop_during_beam_decoding_redoes_the_decoding(tmp_path, monkeypatch):
    from autolora_exp.task_types import generation

    overrides = e2e_overrides()
    uninterrupted = run(compose(overrides, tmp_path / "uninterrupted"))

    cfg = compose(overrides, tmp_path / "stopped")
    decodings = signal_at_call(monkeypatch, generation, "generate_texts", 2)  # the validation after epoch 2
    stopped = run_until_stopped(cfg)
    assert len(decodings) == 2 and (stopped.phase, stopped.step, stopped.during) == ("train", 8, "decoding")

    monkeypatch.undo()
    assert comparable(resume(cfg)) == comparable(uninterrupted)


def test_a_stop_ends_the_beam_search_at_the_next_token():
    from transformers import GPT2Config, GPT2LMHeadModel

    from autolora_exp.decoding import generate_texts
    from autolora_exp.schema import DecodingConfig

    torch.manual_seed(0)  # untied embeddings: a tied random GPT-2 ends every hypothesis at once
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                       eos_token_id=2, bos_token_id=2, pad_token_id=0,
                                       tie_word_embeddings=False)).eval()
    new_tokens: list[int] = []
    real_generate = model.generate
    signal_first_batch = [False]

    def generate(input_ids, **kwargs):
        if signal_first_batch[0] and not new_tokens:  # the stop arrives as the first batch starts decoding
            os.kill(os.getpid(), signal.SIGUSR2)
        out = real_generate(input_ids=input_ids, **kwargs)
        new_tokens.append(out.shape[1] - input_ids.shape[1])
        return out

    model.generate = generate
    settings = DecodingConfig(num_beams=3, max_new_tokens=20, batch_size=2, length_penalty=0.8,
                              no_repeat_ngram_size=0)
    prompts = [[5, 6, 2], [7, 2], [8, 9, 2], [10, 2]]

    class Ids:
        @staticmethod
        def decode(ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    with StopSignal():
        generate_texts(model, Ids, prompts, settings, 2, 0, torch.device("cpu"))
        assert new_tokens[0] > 1 and len(new_tokens) == 2  # without a stop: both batches, several tokens
        new_tokens.clear()
        signal_first_batch[0] = True
        with pytest.raises(Preempted, match="SIGUSR2 in decoding"):
            generate_texts(model, Ids, prompts, settings, 2, 0, torch.device("cpu"))
    assert new_tokens == [1]  # one batch, cut after its first token; the second batch never started


# ---- time-based checkpoints -------------------------------------------------------------------


def test_checkpoints_are_due_by_steps_or_by_time(tmp_path, monkeypatch):
    from autolora_exp import checkpoint

    now = [1000.0]
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: now[0])
    by_time = Checkpointer(tmp_path, "train", 0, "h", every_s=60)
    assert not by_time.due(1)
    now[0] += 59.9
    assert not by_time.due(7)
    now[0] += 0.2
    assert by_time.due(8)
    by_time.save({"step": 8})  # the clock restarts at every save
    assert not by_time.due(9)
    now[0] += 60
    assert by_time.due(10)

    by_steps = Checkpointer(tmp_path, "search", 5, "h")
    assert [s for s in range(1, 12) if by_steps.due(s)] == [5, 10]
    both = by_steps.for_phase("search_r4")
    assert (both.path.name, both.every_steps, both.config_hash) == ("search_r4.pt", 5, "h")


def test_default_schedule_is_by_time_and_bad_values_name_the_key():
    cfg = compose(["debug=default"])
    assert checkpoint_schedule(cfg.train) == {"every_steps": 0, "every_s": 1800.0}
    assert checkpoint_schedule(compose(["train.checkpoint_every=3", "train.checkpoint_every_s=null"]).train) \
        == {"every_steps": 3, "every_s": None}
    with pytest.raises(UserError, match=r"train\.checkpoint_every_s=-1\.0 .* seconds"):
        checkpoint_schedule(compose(["train.checkpoint_every_s=-1"]).train)
    with pytest.raises(UserError, match=r"train\.checkpoint_every=-2 "):
        checkpoint_schedule(compose(["train.checkpoint_every=-2"]).train)


@pytest.mark.parametrize("every_s,saves", [(None, 1), (1e-9, 8 + 2 + 1)], ids=["default", "every-boundary"])
def test_the_train_phase_saves_on_the_time_schedule(every_s, saves, tmp_path, monkeypatch):
    """Default (30 min): a short run saves once, at the end of the phase; a schedule shorter than a
    step saves at every step and epoch boundary, then at the end."""
    written: list[int] = []
    real_save = Checkpointer.save

    def save(self, state):
        if self.phase == "train":
            written.append(state["step"])
        return real_save(self, state)

    monkeypatch.setattr(Checkpointer, "save", save)
    extra = [] if every_s is None else [f"train.checkpoint_every_s={every_s}"]
    run(compose([*TWO_EPOCHS, "method=lora", *extra], tmp_path))
    assert len(written) == saves and written[-1] == 8


# ---- process-group signals on a subprocess with DataLoader workers ----------------------------

#: 2 epochs of 16 steps, a checkpoint every step: long enough to be stopped while two workers load batches
WORKERS = [*TINY, "task.max_train_samples=128", "train.max_steps=null", "train.checkpoint_every=1",
           "train.num_workers=2", "method=lora"]


def launch(out: Path) -> subprocess.Popen:
    """``run.py`` in its own session: its process group is the run and its DataLoader workers."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "run.py", *WORKERS, f"hydra.run.dir={out}"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def group_members(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_group_while_workers_run(proc: subprocess.Popen, out: Path, signum: int) -> None:
    deadline = time.time() + 240
    while not ((out / "checkpoints" / "train.pt").exists() and len(group_members(proc.pid)) >= 3):
        if proc.poll() is not None:
            raise AssertionError(f"run ended before it could be stopped: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint with two running workers within 240 s")
        time.sleep(0.005)
    os.killpg(proc.pid, signum)


@pytest.fixture(scope="module")
def uninterrupted_with_workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = launch(out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "Ctrl-C"])  # Ctrl-C in-process: test_every_method_..[lora-Ctrl-C]
def test_process_group_signal_with_workers_stops_cleanly_and_resumes(uninterrupted_with_workers, signum, tmp_path):
    proc = launch(tmp_path)
    stop_group_while_workers_run(proc, tmp_path, signum)
    _, err = proc.communicate(timeout=300)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "DataLoader worker" not in err, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith(("stopped:", "error:"))] == [
        next(line for line in err.splitlines() if line.startswith(f"stopped: stopped by signal {name} in train"))]
    state = torch.load(tmp_path / "checkpoints" / "train.pt", weights_only=False)
    assert state["step"] > 0 and not state.get("done"), "the run finished before the signal: nothing was tested"
    deadline = time.time() + 30
    while group_members(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not group_members(proc.pid), "DataLoader workers outlived the stopped run"

    again = launch(tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    resumed = json.loads((tmp_path / "result.json").read_text())
    assert resumed["phases"]["train"]["resumed_from_step"] == state["step"]
    assert comparable(resumed) == comparable(uninterrupted_with_workers)


# ---- Ctrl-C twice ------------------------------------------------------------------------------


def test_second_ctrl_c_aborts_at_once_and_finish_exits_130(capfd):
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT  # the first one only asks for a stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert "Ctrl-C again aborts at once" in capfd.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # Python's own SIGINT handler is not "handed on" (no traceback)
        stop.finish()
    assert exit_.value.code == 130


def test_run_py_prints_one_line_when_aborted_by_a_second_ctrl_c(monkeypatch, capsys, tmp_path):
    import importlib.util

    import autolora_exp.pipeline as pipeline

    def interrupted_twice(cfg, stop):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(pipeline, "run", interrupted_twice)
    spec = importlib.util.spec_from_file_location("run_entry", REPO / "run.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    with pytest.raises(SystemExit) as exit_:
        entry.main.__wrapped__(compose(TINY, tmp_path))
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("aborted:")] and "Traceback" not in err
