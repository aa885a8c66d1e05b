"""Where heavy, independent work runs: in this process (``local``), on a process pool (``process``) or on a
Ray cluster (``ray``). A unit of work is a task ``fn(shared, args)``: ``fn`` a module-level function,
``shared`` read-only data every task needs (the data set), sent to each worker once (process-pool
initializer, Ray's object store), ``args`` the task's own small input.

The executor does not decide what to run: callers look results up in the run's content-addressed cache
first and submit only the missing ones, and store each result the moment it arrives (``on_result``), so an
interrupted run resumes where it stopped. On Ray a task declares its resources (``num_cpus``, and
``num_gpus`` on a cluster that has GPUs) and is retried when its worker dies. One rich progress bar counts
the tasks' units (attacker models, trials) as they finish, wherever they run.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgeprune.errors import ConfigError
from edgeprune.registry import Registry

EXECUTORS: Registry = Registry("executor")
RAY_RETRIES = 3  # a task whose worker process dies is resubmitted this many times


@dataclass
class Task:
    args: Any
    units: int = 1  # progress-bar units this task completes (models in an ensemble batch)


OnResult = Callable[[int, Any], None]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` torch intra-op threads (None or 0: leave the setting alone), restored afterwards."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Executor(abc.ABC):
    name = "base"

    def __init__(self, cfg):
        self.cfg = cfg  # edgeprune.recipe.ExecConfig

    def run(self, fn: Callable, tasks: Sequence[Task], shared: Any, on_result: OnResult, label: str) -> None:
        """Call ``fn(shared, task.args)`` for every task; ``on_result(i, result)`` in this process as each ends."""
        from edgeprune.progress import progress

        with progress() as bar:
            bar_task = bar.add_task(label, total=sum(t.units for t in tasks))

            def done(i: int, result: Any) -> None:
                on_result(i, result)
                bar.advance(bar_task, tasks[i].units)

            if tasks:
                self._run(fn, tasks, shared, done)

    @abc.abstractmethod
    def _run(self, fn, tasks, shared, done) -> None:
        """Run every task and call ``done(i, result)`` for each."""

    def describe(self) -> dict:
        return {"executor": self.name}


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """In this process, one task after another (the default: no extra processes, no Ray)."""

    name = "local"

    def _run(self, fn, tasks, shared, done) -> None:
        for i, t in enumerate(tasks):
            done(i, fn(shared, t.args))


_WORKER_SHARED: Any = None


def _init_worker(shared: Any, threads: int) -> None:
    global _WORKER_SHARED
    _WORKER_SHARED = shared
    if threads:
        import torch

        torch.set_num_threads(threads)


def _call_in_worker(fn: Callable, args: Any) -> Any:
    return fn(_WORKER_SHARED, args)


@EXECUTORS.register("process")
class ProcessExecutor(Executor):
    """A pool of ``exec.workers`` processes (spawned) on this machine; the shared data is sent once per worker."""

    name = "process"

    def workers(self, n_tasks: int) -> int:
        return max(1, min(self.cfg.workers or os.cpu_count() or 1, n_tasks))

    def _run(self, fn, tasks, shared, done) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=self.workers(len(tasks)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(shared, self.cfg.task_cpus)) as ex:
            futs = {ex.submit(_call_in_worker, fn, t.args): i for i, t in enumerate(tasks)}
            for f in as_completed(futs):
                done(futs[f], f.result())

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.cfg.workers or os.cpu_count(), "task_cpus": self.cfg.task_cpus}


def _ray_task(fn: Callable, shared: Any, args: Any, threads: int) -> Any:
    from edgeprune.runtime import task_gpu

    with torch_threads(threads), task_gpu():  # the task's runtime resolves to the GPU Ray reserved for it
        return fn(shared, args)


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Tasks on a Ray cluster: a local one started here (``--ray-address`` unset), a running one (``auto``)
    or the one at ``HOST:PORT`` / ``ray://HOST:PORT``. Workers must have edgeprune installed."""

    name = "ray"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.started_here = False
        self.resources: dict = {}

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise ConfigError("executor ray needs Ray: pip install 'edgeprune[ray]'") from None
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            try:
                if self.cfg.ray_address:
                    ray.init(address=self.cfg.ray_address, **kwargs)
                else:
                    ray.init(address="local", num_cpus=self.cfg.workers or None, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = self.cfg.ray_address or "a local instance"
                raise ConfigError(f"cannot start or join Ray ({where}): {str(e).splitlines()[0]}") from None
            self.started_here = True
        self.resources = ray.cluster_resources()
        return ray

    def num_gpus(self) -> float:
        if self.cfg.task_gpus is not None:
            return float(self.cfg.task_gpus)
        return 1.0 if self.resources.get("GPU", 0) > 0 else 0.0

    def _run(self, fn, tasks, shared, done) -> None:
        ray = self._connect()
        try:
            remote = ray.remote(num_cpus=self.cfg.task_cpus, num_gpus=self.num_gpus(),
                                max_retries=RAY_RETRIES)(_ray_task)
            shared_ref = ray.put(shared)  # into the object store once; every task reads it from there
            pending = {remote.remote(fn, shared_ref, t.args, self.cfg.task_cpus): i for i, t in enumerate(tasks)}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    done(pending.pop(ref), ray.get(ref))
        finally:
            if self.started_here:
                ray.shutdown()
                self.started_here = False

    def describe(self) -> dict:
        return {"executor": self.name, "address": self.cfg.ray_address or "local", "task_cpus": self.cfg.task_cpus,
                "task_gpus": self.num_gpus(), "retries": RAY_RETRIES,
                "cluster_cpus": self.resources.get("CPU"), "cluster_gpus": self.resources.get("GPU", 0)}


def make_executor(cfg) -> Executor:
    return EXECUTORS.get(cfg.executor)(cfg)
