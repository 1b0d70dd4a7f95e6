"""Where a flow's tasks run: in this process (the default) or on a Dask cluster the settings name.

``LIVEYIELD_DASK_WORKERS=N`` starts a local cluster of N single-threaded worker processes on the
loopback interface for each flow run (its HTTP endpoints on a free loopback port) and closes it
after the run (a subflow uses its parent's);
``LIVEYIELD_DASK_ADDRESS=tcp://host:port`` uses an existing scheduler; neither keeps every task in
the flow's process, as the embedded default always did (tasks/settings.py reads and checks both).

The flows name :class:`SettingsTaskRunner` as their task runner: it reads the settings when a
flow run starts, never at import, and hands the run Prefect's own runners — prefect-dask's
``DaskTaskRunner`` for a cluster, else Prefect's default thread-pool runner. A flow then fans
out with :func:`run_each` / :func:`submit_each`, which submit one task run per call to the
cluster, or call the tasks one after another in the flow's process when there is none.

What crosses to a worker is small: task parameters are names, dates and numbers, and results
are summaries. Each task opens its own database engine from the settings in the process it runs
in (engines are never pickled). Dask may run a task again when a worker dies, so a fanned-out
task must be idempotent: ingest is (a batch already recorded is skipped), and so are a feature
partition's build and a scoring partition's write (one transaction replaces its rows).

The workers of an existing cluster must see the same ``LIVEYIELD_DB_URL`` and ``LIVEYIELD_HOME``
(the landing zone) as the flow, have this package installed (with the flows' folder on their
path for deployment runs, tasks/ops/dask_serve.py says why), and reach the flow's Prefect API:
with ``LIVEYIELD_DASK_ADDRESS`` set, the flow needs a Prefect server (``PREFECT_API_URL``), since
the ephemeral API lives in the flow's process. A fanned-out task checks that it writes to the
flow's warehouse (:func:`check_warehouse`) before it touches anything.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefect.futures import PrefectFuture
from prefect.states import Failed, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from tasks.settings import DaskSettings, dask_settings, get_settings, redact_url

LOCAL_CLUSTER = "distributed.LocalCluster"


class ClusterSettingError(ValueError):
    """The Dask settings cannot be used as they are (the message says why)."""


class WrongWarehouse(RuntimeError):
    """A worker's settings name another warehouse than the flow's."""


def local_cluster_kwargs(workers: int, prefect_api_url: str | None) -> dict[str, Any]:
    """LocalCluster arguments: ``workers`` processes of one thread each, bound to 127.0.0.1,
    no dashboard; the workers reach the flow's Prefect API at ``prefect_api_url``."""
    kwargs: dict[str, Any] = {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        # The scheduler's HTTP endpoints (and the dashboard, where bokeh is installed) on a free
        # loopback port: nothing listens beyond this machine, and runs side by side never clash.
        "dashboard_address": "127.0.0.1:0",
    }
    if prefect_api_url:
        # The ephemeral API is a server process of the flow's; its URL is not in the workers'
        # environment (nor in the settings Prefect ships with each task run), so it goes here.
        kwargs["env"] = {"PREFECT_API_URL": prefect_api_url}
    return kwargs


def task_runner(dask: DaskSettings) -> TaskRunner[Any]:
    """The task runner the settings ask for: prefect-dask's DaskTaskRunner on an existing scheduler
    or on a local cluster made for the run, else Prefect's default (a thread pool in this process).
    """
    if not dask.distributed:
        return ThreadPoolTaskRunner()
    from prefect import settings as prefect_settings
    from prefect_dask import DaskTaskRunner

    api_url = prefect_settings.PREFECT_API_URL.value()
    if dask.address is not None:
        if not api_url:
            raise ClusterSettingError(
                f"LIVEYIELD_DASK_ADDRESS={dask.address}: the workers of an existing cluster need a "
                "Prefect server to report to; set PREFECT_API_URL (the ephemeral API lives in this "
                "process only), or use LIVEYIELD_DASK_WORKERS for a local cluster"
            )
        return DaskTaskRunner(address=dask.address)
    assert dask.workers is not None
    if not api_url:
        from prefect.client.orchestration import get_client

        api_url = get_client(sync_client=True).api_url.__str__()  # starts (or finds) the ephemeral API
    return DaskTaskRunner(
        cluster_class=LOCAL_CLUSTER, cluster_kwargs=local_cluster_kwargs(dask.workers, api_url)
    )


class SettingsTaskRunner(TaskRunner[PrefectFuture[Any]]):
    """The flows' task runner: decided by the Dask settings when a flow run starts.

    Prefect starts a fresh duplicate of a flow's runner for every run (and for a subflow run), so
    the settings are read per run and the cluster a run starts is closed when it ends.
    """

    def __init__(self) -> None:
        self._inner: TaskRunner[Any] | None = None
        super().__init__()

    @property
    def distributed(self) -> bool:
        """Whether this run's tasks are submitted to a Dask cluster."""
        from prefect_dask import DaskTaskRunner

        return isinstance(self._inner, DaskTaskRunner)

    def duplicate(self) -> SettingsTaskRunner:
        return type(self)()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    __hash__ = object.__hash__

    def __enter__(self) -> SettingsTaskRunner:
        inner = _parents_cluster()
        if inner is None and worker_label() is not None:
            inner = ThreadPoolTaskRunner()  # a task on a worker that runs a flow keeps its work there
        if inner is None:
            try:
                settings = dask_settings()
            except ValueError as exc:
                raise ClusterSettingError(str(exc)) from None
            inner = task_runner(settings)
        super().__enter__()
        self._inner = inner.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        inner, self._inner = self._inner, None
        try:
            if inner is not None:
                inner.__exit__(exc_type, exc_value, traceback)
        finally:
            super().__exit__(exc_type, exc_value, traceback)

    def submit(
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, Any] | None = None,
    ) -> PrefectFuture[Any]:
        if self._inner is None:
            raise RuntimeError("The task runner must be started before submitting work.")
        return self._inner.submit(task, parameters, wait_for, dependencies)

    def cancel_all(self) -> None:
        """Cancel what the inner runner still runs (Prefect calls this when a flow is cancelled)."""
        cancel = getattr(self._inner, "cancel_all", None)
        if cancel is not None:
            cancel()


def _parents_cluster() -> TaskRunner[Any] | None:
    """For a subflow whose parent runs on a cluster: a runner on the same scheduler (none else).

    Prefect starts a subflow's runner while the parent's flow-run context is still current; the
    parent's local cluster is made on first use, so asking for its client makes it now.
    """
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    parent = context.task_runner if context is not None else None
    if not isinstance(parent, SettingsTaskRunner) or not isinstance(parent._inner, DaskTaskRunner):
        return None
    scheduler = parent._inner.client.scheduler
    assert scheduler is not None, "a started Dask client has a scheduler"
    return DaskTaskRunner(address=scheduler.address)


def on_cluster() -> bool:
    """Whether the current flow run fans out over a Dask cluster."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    return isinstance(runner, SettingsTaskRunner) and runner.distributed


def worker_count() -> int:
    """The Dask workers the current flow run's cluster has now (1 when it runs in-process)."""
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    inner = runner._inner if isinstance(runner, SettingsTaskRunner) else None
    if not isinstance(inner, DaskTaskRunner):
        return 1
    return max(1, len(inner.client.scheduler_info().get("workers", {})))


def worker_label() -> str | None:
    """``<worker address> pid <pid>`` inside a Dask worker, else None (the flow's own process)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return f"{worker.address} pid {os.getpid()}"


def warehouse_id() -> str:
    """The warehouse this process's settings name, password hidden: the flow passes it to the
    tasks it fans out, which compare it with their own (:func:`check_warehouse`)."""
    return redact_url(get_settings().db_url)


def check_warehouse(expected: str | None) -> None:
    """Refuse to work when this process's settings name another warehouse than the flow's."""
    if expected is not None and (mine := warehouse_id()) != expected:
        raise WrongWarehouse(
            f"this worker's warehouse is {mine}, the flow's is {expected}: start the Dask workers "
            "with the flow's LIVEYIELD_DB_URL and LIVEYIELD_HOME"
        )


def submit_each(task: Any, calls: Sequence[Mapping[str, Any]]) -> list[PrefectFuture[Any]]:
    """Submit one run of ``task`` per call (its keyword arguments) to the flow's task runner."""
    return [task.submit(**call) for call in calls]


def settle(future: PrefectFuture[Any]) -> State[Any]:
    """Wait for a submitted run and return its final state; a run the cluster lost (its worker
    died more often than Dask retries) is a Failed state saying so."""
    wrapped = getattr(future, "wrapped_future", None)
    try:
        outcome = wrapped.result() if wrapped is not None else None
    except Exception as exc:
        return Failed(
            message=f"task run {future.task_run_id} lost on the cluster: {type(exc).__name__}: {exc}"
        )
    if isinstance(outcome, State):
        return outcome
    future.wait()
    return future.state


def tally(workers: Iterable[str | None]) -> dict[str, int]:
    """Task runs per Dask worker label (:func:`worker_label`); runs in the flow's process are left out."""
    return dict(Counter(w for w in workers if w is not None))


def run_each(task: Any, calls: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The results of one run of ``task`` per call, in order.

    On a cluster every run is submitted at once and all are waited for; then the first failure
    is raised. In this process the runs go one after another, and the first failure stops them.
    """
    if not on_cluster():
        return [task(**call) for call in calls]
    states = [settle(future) for future in submit_each(task, calls)]
    for state in states:
        if not state.is_completed():
            if state.data is None:
                raise RuntimeError(state.message or "a task run failed on the cluster")
            state.result()  # raises the task's own exception
    return [state.result() for state in states]
