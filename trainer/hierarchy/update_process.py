"""The process that runs overlapped controller updates (`options.overlap_worker: process`).

An update on a worker thread slowed SAC's own gradient step by ~0.7 ms of 19 at 16 envs (the two
threads hand the GIL back and forth between torch ops; README, "The controller update"); a process has
its own interpreter and took nothing from it. The controller's weights and Adam's moments live in
shared memory (torch.multiprocessing), so the process steps the very tensors the learner chooses
with, saves and can step in place itself; each request carries what else an update reads (the
batch, the dropout generator's state, the optimizer's hyperparameters, the torch thread count and
matmul precision) and each reply the stats and the generator's new state. Same inputs, same ops,
same thread count: the results are bit-identical to an update in place.

One process serves every learner of its parent (a test session builds hundreds), started when
HierarchicalSAC.learn begins (`OptionsLearner.prepare_overlap`) or by the first overlapped update
(spawn: about 2 s, once, on the core SAC leaves idle). It ignores SIGINT and SIGTERM, which reach the
whole process group: the parent decides, and a SIGTERM'd trainer still collects the update in
flight before it writes its checkpoint. It exits when the parent's end of the pipe closes.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import multiprocessing
import signal
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from trainer.config import OptionsConfig
from trainer.errors import TrainerError
from trainer.hierarchy.option_buffer import OptionBatch

LOGGER = logging.getLogger(__name__)


class UpdateProcessError(TrainerError):
    """The update process died (killed, out of memory); the update it held is lost."""


@dataclass
class LearnerSetup:
    """What the process needs once per learner: its config and its shared tensors, each packed in one
    buffer (`share_parameters`, `share_adam_state`)."""

    cfg: OptionsConfig
    parameters: torch.Tensor
    optimizer_state: torch.Tensor
    staging: torch.Tensor  # BatchStaging.buffer
    staging_layout: tuple


@dataclass
class UpdateRequest:
    batch: OptionBatch | None  # None: the batch is in the learner's staging buffer
    temperature: float
    annealed_temperature: float
    update_index: int
    generator_state: bytes
    param_group: dict[str, Any]  # the optimizer's hyperparameters (lr, betas, ...), without "params"
    threads: int
    matmul_precision: str


def pack(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`tensors` copied end to end into one float32 buffer in shared memory, and views of it in their
    shapes: one file descriptor to send and one mapping to make, not one per tensor (32)."""
    if any(tensor.dtype != torch.float32 for tensor in tensors):
        raise ValueError("the update process shares float32 tensors only")
    flat = torch.cat([tensor.detach().reshape(-1) for tensor in tensors]).share_memory_()
    return flat, unpack(flat, [tensor.shape for tensor in tensors])


def unpack(flat: torch.Tensor, shapes: list[torch.Size]) -> list[torch.Tensor]:
    views, offset = [], 0
    for shape in shapes:
        size = shape.numel()
        views.append(flat[offset:offset + size].view(shape))
        offset += size
    return views


def share_parameters(module: torch.nn.Module) -> torch.Tensor:
    """The module's parameters moved into one shared buffer (the same Parameter objects, now views of it)."""
    parameters = list(module.parameters())
    flat, views = pack(parameters)
    for parameter, view in zip(parameters, views, strict=True):
        parameter.data = view
    return flat


ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


def share_adam_state(optimizer: torch.optim.Adam) -> torch.Tensor:
    """Adam's per-parameter state moved into one shared buffer, created first where Adam has not
    stepped yet (as Adam's own first step creates it: step 0, zero moments), so the process's steps
    land in tensors this process sees."""
    if any(group["amsgrad"] or group["fused"] or group["capturable"] for group in optimizer.param_groups):
        raise ValueError("the update process shares plain Adam's state only (no amsgrad, fused or capturable)")
    states = [optimizer.state[parameter] for group in optimizer.param_groups for parameter in group["params"]]
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    for parameter, state in zip(parameters, states, strict=True):
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
    flat, views = pack([state[key] for state in states for key in ADAM_KEYS])
    for index, state in enumerate(states):
        state.update(zip(ADAM_KEYS, views[index * len(ADAM_KEYS):(index + 1) * len(ADAM_KEYS)], strict=True))
    return flat


class BatchStaging:
    """A batch's arrays in one shared buffer, allocated once per learner: the parent copies each batch
    in and the process reads it where it lies. Pickled, a 128-row batch (600 KB) cost the rollout
    ~0.7 ms per update, mostly page faults on fresh buffers; the copy costs a tenth of that."""

    ALIGN = 64

    def __init__(self, layout: tuple, buffer: torch.Tensor | None = None):
        self.layout = layout
        sizes = [np.dtype(dtype).itemsize * int(np.prod(shape)) for _, dtype, shape in layout]
        offsets = np.cumsum([0] + [-(-size // self.ALIGN) * self.ALIGN for size in sizes]).tolist()
        self.buffer = buffer if buffer is not None else torch.zeros(offsets[-1], dtype=torch.uint8).share_memory_()
        raw = self.buffer.numpy()
        self.arrays = {
            name: raw[start:start + size].view(np.dtype(dtype)).reshape(shape)
            for (name, dtype, shape), start, size in zip(layout, offsets, sizes, strict=False)
        }

    @staticmethod
    def layout_of(batch: OptionBatch) -> tuple:
        return tuple((name, array.dtype.str, array.shape) for name, array in vars(batch).items() if array is not None)

    def put(self, batch: OptionBatch) -> bool:
        """Copy `batch` in; False (nothing copied) where its shapes differ from the layout's."""
        if self.layout_of(batch) != self.layout:
            return False
        for name, array in self.arrays.items():
            np.copyto(array, getattr(batch, name))
        return True

    def batch(self) -> OptionBatch:
        return OptionBatch(**self.arrays)


def hyperparameters(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    (group,) = optimizer.param_groups
    return {key: value for key, value in group.items() if key != "params"}


class UpdateProcess:
    """The parent's end: `submit` an update, collect it with `result` (in any order across learners)."""

    _shared: ClassVar[UpdateProcess | None] = None
    _unavailable: ClassVar[str | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def shared(cls) -> UpdateProcess | None:
        """The running update process, started on first use; None where this process cannot start
        one (a daemonic process may not have children), said once in the log."""
        with cls._lock:
            if cls._shared is not None and not cls._shared.broken:
                return cls._shared
            if cls._unavailable is not None:
                return None
            try:
                cls._shared = cls()
                atexit.register(cls._shared.close)  # before multiprocessing's own exit handler, which would wait for it
            except Exception as error:  # AssertionError in a daemonic parent, OSError without resources
                cls._unavailable = f"{type(error).__name__}: {error}"
                LOGGER.warning("options controller updates stay on a worker thread: no update process (%s)",
                               cls._unavailable)
                return None
            return cls._shared

    def __init__(self):
        context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools mid-run
        self._connection, child = context.Pipe()
        self._process = context.Process(target=serve, args=(child,), name="options-controller-updates", daemon=True)
        # Spawn re-runs the parent's main script in the child unless __main__ names none: a script
        # without an `if __name__ == "__main__"` guard (a benchmark, a notebook's driver) would run
        # again there. The child needs nothing from it, so it is shown a bare __main__ while it starts.
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self._process.start()
        finally:
            sys.modules["__main__"] = main
        child.close()
        self._tickets = itertools.count()
        self._replies: dict[int, tuple] = {}
        self._keys = itertools.count()
        self._forgotten: collections.deque[int] = collections.deque()
        self.broken: str | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def new_key(self) -> int:
        return next(self._keys)

    def submit(self, key: int, setup: LearnerSetup | None, request: UpdateRequest | None) -> int:
        ticket = next(self._tickets)
        while self._forgotten:
            self._send(("forget", self._forgotten.popleft()))
        self._send(("update", ticket, key, setup, request))
        return ticket

    def result(self, ticket: int) -> tuple[Any, bytes]:
        """Wait for `ticket`'s reply: (stats, the dropout generator's state); re-raises the update's error."""
        while ticket not in self._replies:
            try:
                reply = self._connection.recv()
            except (EOFError, OSError) as error:
                raise self._died(error) from None
            self._replies[reply[0]] = reply[1:]
        stats, generator_state, error = self._replies.pop(ticket)
        if error is not None:
            raise error
        return stats, generator_state

    def wait_ready(self) -> int:
        """Wait until the process has started and answers (benchmarks start timing after it); returns
        how many learners' tensors it holds."""
        return self.result(self.submit(-1, None, None))[0]

    def forget(self, key: int) -> None:
        """Drop a learner's tensors in the process (its learner is gone), with the next request: this
        runs from a finalizer, at any allocation, maybe in the middle of a send."""
        self._forgotten.append(key)

    def close(self) -> None:
        """Close the pipe; the process finishes what it holds and exits."""
        self._connection.close()
        self._process.join(timeout=10)
        if self._process.is_alive():  # it ignores SIGTERM
            self._process.kill()
            self._process.join()

    def _send(self, message: tuple) -> None:
        if self.broken is not None:
            raise UpdateProcessError(self.broken)
        try:
            self._connection.send(message)
        except OSError as error:
            raise self._died(error) from None

    def _died(self, error: BaseException) -> UpdateProcessError:
        self._connection.close()
        self._process.join(timeout=5)
        self.broken = (
            f"the options controller's update process (pid {self._process.pid}) exited with code "
            f"{self._process.exitcode} ({type(error).__name__}); the update it held is lost. Rerun the step; "
            "options.overlap_worker: thread keeps updates in this process"
        )
        return UpdateProcessError(self.broken)


def serve(connection) -> None:
    """The process's loop: one learner's setup and update after another, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from trainer.hierarchy.controller import OptionsController, batch_tensors, gradient_step

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch's first optimizer imports torch._dynamo (~1 s)
    learners: dict[int, tuple] = {}
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message[0] == "forget":
            learners.pop(message[1], None)
            continue
        _, ticket, key, setup, request = message
        if request is None:  # wait_ready's ping
            connection.send((ticket, len(learners), None, None))
            continue
        try:
            if setup is not None:
                learners[key] = _build(setup, OptionsController)
            cfg, controller, optimizer, generator, staging = learners[key]
            batch = request.batch if request.batch is not None else staging.batch()
            if torch.get_num_threads() != request.threads:
                torch.set_num_threads(request.threads)
            torch.set_float32_matmul_precision(request.matmul_precision)
            generator.set_state(as_generator_state(request.generator_state))
            optimizer.param_groups[0].update(request.param_group)
            stats = gradient_step(cfg, controller, optimizer, batch_tensors(batch, torch.device("cpu")),
                                  request.temperature, request.annealed_temperature, request.update_index,
                                  batch.selected_at)
            reply = (ticket, stats, generator.get_state().numpy().tobytes(), None)
        except Exception as error:  # the parent re-raises it where it collects the update
            reply = (ticket, None, None, error)
        try:
            connection.send(reply)
        except Exception as send_error:  # the update's error does not pickle (nothing was sent): send its text
            error = reply[3] if reply[3] is not None else send_error
            connection.send((ticket, None, None, RuntimeError(f"{type(error).__name__}: {error}")))


def _build(setup: LearnerSetup, controller_class) -> tuple:
    """A learner's network over its shared parameters, and an Adam whose state is the shared state."""
    cfg = setup.cfg
    generator = torch.Generator()
    controller = controller_class(cfg.state_dim, cfg.num_options, cfg.hidden_dim, cfg.dropout, generator)
    parameters = list(controller.parameters())
    for parameter, view in zip(parameters, unpack(setup.parameters, [p.shape for p in parameters]), strict=True):
        parameter.data = view
    optimizer = torch.optim.Adam(parameters, lr=cfg.options_lr)
    shapes = [shape for p in parameters for shape in (torch.Size(()), p.shape, p.shape)]
    views = unpack(setup.optimizer_state, shapes)
    for index, parameter in enumerate(parameters):
        optimizer.state[parameter] = dict(zip(ADAM_KEYS, views[3 * index:3 * index + 3], strict=True))
    return cfg, controller, optimizer, generator, BatchStaging(setup.staging_layout, setup.staging)


def as_generator_state(raw: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy())
