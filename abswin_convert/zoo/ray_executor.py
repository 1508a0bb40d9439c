"""The ``ray`` executor: each output (conversion, hooks, push) is one Ray task, ``jobs`` of them in flight.

Workers build in the output folder they are given, exactly as the local executor does (staging, then a rename),
so on a cluster that folder must be on storage every node shares. A task asks Ray for the resources its entry
names; an entry with an ``eval`` or ``finetune`` hook also asks for a GPU when the cluster has one. A worker lost
mid-output (killed, out of memory, its node gone) leaves only a hidden staging folder; the output runs once more,
then is reported failed.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque

from ..errors import AbswinError, first_line
from ..evaluation.hooks import GPU_HOOKS
from .executors import Progress
from .manifest import OutputJob
from .output import run_output, source_digest
from .report import OutputRow

try:
    import ray
    from ray.exceptions import RayError
except ImportError as exc:
    raise AbswinError("--executor ray needs Ray; install it with pip install 'abswin-convert[ray]'") from exc

ATTEMPTS = 2  # a task whose worker is lost runs once more
_CONNECT_TIMEOUT_S = 10
_RAY_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}  # manifest name -> cluster resource


# Retried by RayExecutor, not by Ray, so that the report can say how many attempts an output took.
@ray.remote(max_retries=0)
def _run_task(job: OutputJob, dry_run: bool) -> OutputRow:
    row = run_output(job, dry_run, source_digest(job.location))
    row.executor, row.node = "ray", ray.get_runtime_context().get_node_id()
    return row


class RayExecutor:
    """Outputs as Ray tasks on the cluster at ``address``; without one, on a local Ray instance started for the run."""

    def __init__(self, jobs: int = 1, address: str | None = None) -> None:
        if address is not None:
            _check_reachable(address)  # before the run touches the output folder
        self.jobs = max(1, jobs)
        self.address = address

    def run(self, entries: list[list[OutputJob]], dry_run: bool, progress: Progress) -> list[OutputRow]:
        jobs = [job for entry in entries for job in entry]
        with _Connection(self.address) as cluster:
            return _Scheduler(jobs, dry_run, progress, self.jobs, cluster).run()


class _Connection:
    """Connected to Ray for the run (a local instance when there is no address); a connection that was already
    there (a test's cluster, a notebook's) is used and left open."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.ours = False

    def __enter__(self) -> dict[str, float]:
        if not ray.is_initialized():
            quiet: dict = {"logging_level": logging.WARNING, "log_to_driver": False}  # the report holds every error
            try:
                if self.address is None:
                    ray.init(address="local", include_dashboard=False, **quiet)
                else:
                    ray.init(address=self.address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = self.address or "a new local instance"
                raise AbswinError(f"cannot start or reach Ray ({where}): {first_line(error)}") from error
            self.ours = True
        return ray.cluster_resources()

    def __exit__(self, *_: object) -> None:
        if self.ours:
            ray.shutdown()


class _Scheduler:
    """Keeps ``limit`` tasks in flight, resubmits a task whose worker was lost, and collects the rows."""

    def __init__(self, jobs: list[OutputJob], dry_run: bool, progress: Progress, limit: int,
                 cluster: dict[str, float]) -> None:
        self.jobs, self.dry_run, self.progress, self.limit, self.cluster = jobs, dry_run, progress, limit, cluster
        self.rows: dict[int, OutputRow] = {}
        self.running: dict[ray.ObjectRef, tuple[int, int, float, dict]] = {}  # task -> index, attempt, start, options

    def run(self) -> list[OutputRow]:
        waiting = deque(range(len(self.jobs)))
        while waiting or self.running:
            while waiting and len(self.running) < self.limit:
                self._start(waiting.popleft())
            if self.running:
                [task], _ = ray.wait(list(self.running), num_returns=1)
                self._collect(task)
        return [self.rows[index] for index in range(len(self.jobs))]

    def _start(self, index: int) -> None:
        job = self.jobs[index]
        self.progress.started(job)
        options, problem = task_options(job, self.cluster)
        if problem:
            self._finish(index, _failed_row(job, problem, attempts=0, seconds=0.0))
        else:
            self._submit(index, 1, time.monotonic(), options)

    def _submit(self, index: int, attempt: int, start: float, options: dict) -> None:
        task = _run_task.options(**options).remote(self.jobs[index], self.dry_run)
        self.running[task] = (index, attempt, start, options)

    def _collect(self, task: ray.ObjectRef) -> None:
        index, attempt, start, options = self.running.pop(task)
        try:
            row = ray.get(task)
        except RayError as error:  # the worker was lost, or the task could not run there at all
            if attempt < ATTEMPTS:
                self._submit(index, attempt + 1, start, options)
                return
            problem = f"the Ray task failed {attempt} times; last: {_describe(error)}"
            row = _failed_row(self.jobs[index], problem, attempts=attempt, seconds=time.monotonic() - start)
        row.attempts = attempt
        self._finish(index, row)

    def _finish(self, index: int, row: OutputRow) -> None:
        self.rows[index] = row
        self.progress.finished(row)


def _check_reachable(address: str) -> None:
    """A ``HOST:PORT`` that nothing answers on is refused at once (Ray itself would keep retrying for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():  # "auto", "ray://...": Ray's to resolve
        return
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or str(error)
        raise AbswinError(f"no Ray cluster answers at {address} ({reason}); is `ray start` running there?") from error


def task_options(job: OutputJob, cluster: dict[str, float]) -> tuple[dict, str | None]:
    """Ray's ``.options()`` for ``job``, or why the cluster can never run it."""
    asked = dict(job.resources)
    if "num_gpus" not in asked and cluster.get("GPU", 0) >= 1 and any(h.name in GPU_HOOKS for h in job.hooks):
        asked["num_gpus"] = 1
    for name, amount in asked.items():
        have = cluster.get(_RAY_NAMES.get(name, name), 0.0)
        if amount > have:
            return {}, f"asks for {name} = {amount:g} but the Ray cluster has {have:g}"
    options: dict = {name: asked.pop(name) for name in list(asked) if name in _RAY_NAMES}
    if asked:
        options["resources"] = asked
    return options, None


def _failed_row(job: OutputJob, problem: str, attempts: int, seconds: float) -> OutputRow:
    return OutputRow(job.folder.name, job.source, job.size, job.target, "failed", seconds=seconds, error=problem,
                     executor="ray", attempts=attempts)


def _describe(error: RayError) -> str:
    """``WorkerCrashedError: The worker died ...``; for an exception the task raised, that exception."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {first_line(cause)}"



