"""A small Dask runner for embarrassingly parallel job lists (synthesis sweeps, ablations).

``run_jobs(fn, jobs)`` returns ``[fn(job) for job in jobs]`` -- the same list, in the same order,
as the serial loop -- but runs the calls on a Dask cluster: a fresh ``LocalCluster`` (2 worker
processes, 1 thread each, by default), or an existing one given by its scheduler address.
``serial=True`` skips Dask entirely (debugging, or where Dask is not installed).

``fn`` and the jobs must be picklable (a module-level function and plain data). If a job raises,
the first exception (in job order) is re-raised after the cluster is shut down; callers that want
to keep going catch exceptions inside ``fn`` and return them as data.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterable

from tqdm import tqdm

__all__ = ["run_jobs", "DEFAULT_WORKERS"]

#: Worker processes of the LocalCluster started when no scheduler is given.
DEFAULT_WORKERS = 2


def run_jobs(fn: Callable[[Any], Any], jobs: Iterable[Any], scheduler: str | None = None,
             progress: bool = True, *, serial: bool = False, workers: int = DEFAULT_WORKERS,
             desc: str = "jobs") -> list:
    """Run ``fn(job)`` for every job; results in job order, identical to a serial run.

    Parameters
    ----------
    fn : callable
        Function of one job; module-level so Dask can pickle it.
    jobs : iterable
        Job descriptions (plain data).
    scheduler : str or None
        Address of a running Dask scheduler (``tcp://host:8786``); None starts a LocalCluster.
    progress : bool
        Show a tqdm bar on stderr, advanced as jobs finish (in any order).
    serial : bool
        Run in this process, in order, without Dask.
    workers : int
        Worker processes of the LocalCluster (ignored with ``scheduler`` or ``serial``).
    desc : str
        Label of the progress bar.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, file=sys.stderr)
    if serial:
        results = []
        for job in jobs:
            results.append(fn(job))
            bar.update(1)
        bar.close()
        return results

    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        bar.close()
        raise ImportError("the Dask runner needs dask.distributed: run "
                          "`.venv/bin/pip install \"dask[distributed]\"` (or pass serial=True)") from None

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")   # any free port: never clashes
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        # pure=False: equal jobs still run (and are counted) separately
        futures = client.map(fn, jobs, pure=False)
        for _ in as_completed(futures):
            bar.update(1)
        return client.gather(futures)           # job order, raises the first failure
    finally:
        bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
