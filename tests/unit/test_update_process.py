"""The update process (trainer/hierarchy/update_process.py): what it shares, how it starts, stops and
fails. That its updates equal updates in place: tests/unit/test_controller_overlap.py."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from support.options_learner import (
    STATE_DIM,
    add_choices,
    assert_same_learner_state,
    cfg,
)

from trainer.hierarchy import controller as controller_module
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_buffer import OptionReplayBuffer
from trainer.hierarchy.update_process import UpdateProcess, UpdateProcessError, serve

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_torch_thread_on_two_cores")


def trained(learner: OptionsLearner, rounds: int, seed: int = 0) -> OptionsLearner:
    buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(seed)
    add_choices(learner, buffer, rng)
    for _ in range(rounds):
        learner.start_update(learner.sample_batch(buffer))
        add_choices(learner, buffer, rng)
        learner.finish_update()
    return learner


def test_two_learners_interleaved_on_the_one_process_get_their_own_results():
    """Their updates queue in one process and their replies may be read by the other's wait."""
    a, b = (OptionsLearner(cfg(overlap_update=True), seed=seed) for seed in (1, 2))
    buffers = [OptionReplayBuffer(1000, STATE_DIM, 6) for _ in range(2)]
    rngs = [np.random.default_rng(seed) for seed in (1, 2)]
    for learner, buffer, rng in zip((a, b), buffers, rngs):
        add_choices(learner, buffer, rng)
    for _ in range(5):
        a.start_update(a.sample_batch(buffers[0]))
        b.start_update(b.sample_batch(buffers[1]))
        b.finish_update()  # reads a's reply first, keeps it for a
        a.finish_update()
        for learner, buffer, rng in zip((a, b), buffers, rngs):
            add_choices(learner, buffer, rng)
    assert a.last_overlap == b.last_overlap == "process"
    for seed, learner in ((1, a), (2, b)):
        alone = OptionsLearner(cfg(overlap_update=False), seed=seed)
        buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(seed)
        add_choices(alone, buffer, rng)
        for _ in range(5):
            alone.start_update(alone.sample_batch(buffer))
            alone.finish_update()
            add_choices(alone, buffer, rng)
        assert_same_learner_state(learner.state_dict(), alone.state_dict())


def test_a_checkpoint_loaded_mid_run_is_shared_anew(tmp_path):
    """load_state_dict gives Adam new state tensors: the process must step those, not the old ones.
    Train 4, save, train 3, load the save, train 3: the same as train 4, save, load, train 3 in place."""
    learner = trained(OptionsLearner(cfg(overlap_update=True), seed=3), rounds=4)
    path = tmp_path / "controller.pt"
    torch.save(learner.state_dict(), path)
    trained(learner, rounds=3, seed=7)
    learner.load_state_dict(torch.load(path, weights_only=False))
    trained(learner, rounds=3, seed=9)
    assert learner.last_overlap == "process"

    in_place = OptionsLearner(cfg(overlap_update=False), seed=3)
    in_place.load_state_dict(torch.load(path, weights_only=False))
    trained(in_place, rounds=3, seed=9)
    assert_same_learner_state(learner.state_dict(), in_place.state_dict())


def test_a_learner_that_is_gone_is_dropped_by_the_process():
    process = UpdateProcess.shared()
    gc.collect()  # learners earlier tests left in reference cycles go now, not in the count below
    held = process.wait_ready()
    learner = trained(OptionsLearner(cfg(overlap_update=True), seed=0), rounds=1)
    assert process.wait_ready() == held + 1
    del learner
    gc.collect()
    assert process.wait_ready() == held  # the ping carries the forget


def test_a_killed_process_fails_the_update_with_a_clear_error_and_the_next_run_gets_a_new_one():
    learner = trained(OptionsLearner(cfg(overlap_update=True), seed=0), rounds=1)
    process = UpdateProcess.shared()
    buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(0)
    add_choices(learner, buffer, rng)
    os.kill(process.pid, signal.SIGKILL)
    process._process.join(timeout=10)
    with pytest.raises(UpdateProcessError, match=rf"update process \(pid {process.pid}\) exited with code -9"):
        learner.start_update(learner.sample_batch(buffer))
        learner.finish_update()
    assert learner.num_updates == 1  # the lost update was not counted

    learner.start_update(learner.sample_batch(buffer))  # a fresh process, the learner's tensors shared anew
    assert learner.finish_update() is not None
    assert UpdateProcess.shared() is not process and learner.num_updates == 2


def test_updates_stay_on_a_thread_where_no_process_can_start(monkeypatch, caplog):
    def cannot_start(self):
        raise AssertionError("daemonic processes are not allowed to have children")

    monkeypatch.setattr(UpdateProcess, "_shared", None)
    monkeypatch.setattr(UpdateProcess, "_unavailable", None)
    monkeypatch.setattr(UpdateProcess, "__init__", cannot_start)
    learner = OptionsLearner(cfg(overlap_update=True), seed=0)
    with caplog.at_level(logging.WARNING, logger="trainer.hierarchy.update_process"):
        trained(learner, rounds=2)
    assert learner.last_overlap == "thread" and learner.num_updates == 2
    assert "no update process (AssertionError: daemonic processes" in caplog.text


SCRIPT = """
# no `if __name__ == "__main__"` guard: the update process must not run this again
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
print("script ran", flush=True)
import numpy as np, torch
from trainer.hierarchy import controller
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_buffer import OptionReplayBuffer
from support.options_learner import STATE_DIM, add_choices, cfg

controller.available_cores = lambda: 2
torch.set_num_threads(1)
terms = []
signal.signal(signal.SIGTERM, lambda *_: terms.append(1))
learner = OptionsLearner(cfg(overlap_update=True), seed=0)
buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(0)
add_choices(learner, buffer, rng)
learner.start_update(learner.sample_batch(buffer))
learner.finish_update()
learner.start_update(learner.sample_batch(buffer))
os.killpg(os.getpgid(0), signal.SIGTERM)  # what a local stop sends the step's process group
stats = learner.finish_update()  # the update in flight still arrives
print("updates", learner.num_updates, learner.last_overlap, stats is not None, "sigterm", len(terms), flush=True)
"""


def test_a_script_without_a_main_guard_runs_once_survives_a_group_sigterm_and_exits(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"))))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          start_new_session=True)  # its own group: the SIGTERM stays in it
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("script ran") == 1
    assert "updates 2 process True sigterm 1" in done.stdout


def test_an_update_error_that_does_not_pickle_reaches_the_parent_as_its_own_text(monkeypatch):
    """The reply carries the update's error; one pickle cannot carry (a local class) arrives as
    RuntimeError("<type>: <message>"), not as the pickling error that hid it."""

    class LocalError(Exception):
        pass

    def failing_step(*args, **kwargs):
        raise LocalError("the batch holds no transition")

    monkeypatch.setattr(controller_module, "gradient_step", failing_step)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # serve runs on a thread of this process here
    learner = OptionsLearner(cfg(), seed=0)
    buffer = OptionReplayBuffer(1000, STATE_DIM, 6)
    add_choices(learner, buffer, np.random.default_rng(0))
    batch = learner.sample_batch(buffer)
    setup, request = learner._share_for_process(batch), learner._update_request(batch, 1.0, update_index=0)
    parent, child = multiprocessing.Pipe()
    server = threading.Thread(target=serve, args=(child,), daemon=True)
    server.start()
    parent.send(("update", 7, 0, setup, request))
    ticket, stats, generator_state, error = parent.recv()
    parent.close()
    server.join(timeout=30)
    assert (ticket, stats, generator_state) == (7, None, None)
    assert isinstance(error, RuntimeError) and str(error) == "LocalError: the batch holds no transition"
    assert not server.is_alive()  # it left its loop when the pipe closed
