"""The HTTP servers `cds-service serve` can run the application in.

``granian`` (the default): a Rust HTTP layer (hyper on tokio) reads requests asynchronously and
hands only complete requests to a pool of Python threads per worker process. A client that sends
its headers slowly, or opens a connection and sends nothing, costs a socket, not a thread, and its
headers must arrive within ``HEADER_READ_TIMEOUT_MS``. Measured against the alternatives in
benchmarks/bench_servers.py (README, Benchmarks, "HTTP server and slow clients").

``gthread``: gunicorn's threaded worker, the earlier default. Every open connection holds one of
the workers x threads threads until it has sent its request: 4 slowloris connections, or a few
hundred idle ones, stop a 2 x 2 service answering anyone. Only behind a buffering reverse proxy
(docker/nginx/nginx.conf).

``gevent``: gunicorn's event-loop worker. Kept for the comparison; not recommended (see README).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable

SERVERS = ("granian", "gthread", "gevent")
DEFAULT_SERVER = "granian"

# a request's headers must be complete this long after its first byte (granian)
HEADER_READ_TIMEOUT_MS = 10_000
# a worker whose resident memory stays above this is replaced by a fresh one (granian): about
# four times a worker's size after a long load run (about 100 MiB: README, Benchmarks, benchmark 5)
WORKER_MAX_RSS_MIB = 400
# gunicorn: a worker is replaced after this many requests (plus up to the jitter, so that workers
# are not all replaced at once); high enough that a load test does not recycle them every few seconds
MAX_REQUESTS, MAX_REQUESTS_JITTER = 200_000, 20_000
# how long in-flight calls may take to finish on SIGTERM before a worker is killed
GRACEFUL_SECONDS = 30


class MetricsDir:
    """prometheus_client multiprocess mode: the metrics of every worker add up in one folder.
    Own temporary folder unless PROMETHEUS_MULTIPROC_DIR names one (whose old values are dropped)."""

    def __enter__(self) -> "MetricsDir":
        self.path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.own = not self.path
        if self.own:
            self.path = tempfile.mkdtemp(prefix="cds-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.path
        else:
            for name in os.listdir(self.path):  # values of an earlier run do not belong to this one
                if name.endswith(".db"):
                    os.unlink(os.path.join(self.path, name))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.own:
            shutil.rmtree(self.path, ignore_errors=True)


def mark_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def load_worker_app(overrides: dict[str, Any], _target: Any = None):
    """In each worker: the application, without the start-up warnings (the master has logged them
    once), with the worker's garbage-collector settings."""
    from . import create_app
    from .cli import tune_gc

    app = create_app(overrides, startup_warnings=False)
    tune_gc()
    return app


def load_granian_worker_app(overrides: dict[str, Any], _target: Any = None):
    """``load_worker_app`` for a granian worker. Ctrl-C signals the whole process group, and the main
    process then stops each worker with SIGTERM: a worker that took both hung until the main process
    killed it 30 s later (as gunicorn's did: cli.worker_signals). granian's worker sets its handlers
    after this loader, for the signals ``granian._signals._get_signals`` names: here only SIGTERM,
    and the terminal's SIGINT is ignored (the main process has it and stops the workers)."""
    import signal

    import granian._signals

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    granian._signals._get_signals = lambda: [signal.SIGTERM]
    return load_worker_app(overrides, _target)


def _has_setproctitle() -> bool:
    from granian._imports import setproctitle

    return setproctitle is not None


def run(server: str, settings: Any, overrides: dict[str, Any]) -> None:
    """Serve until SIGTERM or SIGINT; the caller has entered ``MetricsDir`` before importing the
    application (prometheus_client chooses multiprocess values when its metrics are created)."""
    if server == "granian":
        run_granian(settings, overrides)
    else:
        run_gunicorn(settings, overrides, worker_class=server)


def run_gunicorn(settings: Any, overrides: dict[str, Any], worker_class: str = "gthread") -> None:
    from gunicorn.app.base import BaseApplication

    from .cli import worker_signals

    def child_exit(server, worker) -> None:
        mark_dead(worker.pid)

    class App(BaseApplication):  # gunicorn's documented way to embed it
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", settings.threads)
            self.cfg.set("worker_class", worker_class)
            self.cfg.set("timeout", max(30, int(settings.hook_deadline * 3)))
            self.cfg.set("graceful_timeout", GRACEFUL_SECONDS)
            self.cfg.set("keepalive", 5)
            self.cfg.set("accesslog", None)
            self.cfg.set("proc_name", "cds-service")
            self.cfg.set("child_exit", child_exit)
            self.cfg.set("post_worker_init", worker_signals)
            # no control socket: by default one at ~/.gunicorn/gunicorn.ctl, shared by every
            # gunicorn of the user, that can stop or reconfigure this one
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)
            self.cfg.set("max_requests", MAX_REQUESTS)
            self.cfg.set("max_requests_jitter", MAX_REQUESTS_JITTER)

        def load(self):
            return load_worker_app(overrides)

    App().run()


def run_granian(settings: Any, overrides: dict[str, Any]) -> None:
    from functools import partial

    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server import MPServer

    class Server(MPServer):
        """granian's process manager, telling prometheus_client when a worker has gone (as
        gunicorn's child_exit does), so that its gauges are dropped."""

        main_pid = os.getpid()

        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            # A worker is forked with the main process's handler and keeps it until granian's worker
            # sets its own, after the application is loaded (about a second). A SIGTERM from the
            # main process in that window only set a flag in the worker's copy: the worker went on
            # to serve, and the main process waited 30 s to kill it (a stop just after start, seen
            # in tests/e2e/test_first_contact.py). A worker still starting has nothing to finish.
            if os.getpid() != self.main_pid:
                os._exit(0)
            super().signal_handler_interrupt(*args, **kwargs)

        def _respawn_workers(self, workers, spawn_target, target_loader, delay: float = 0):
            old = [self.wrks[i].inner.pid for i in workers if i < len(self.wrks)]
            super()._respawn_workers(workers, spawn_target, target_loader, delay)
            for pid in old:
                mark_dead(pid)

        def _stop_workers(self):
            old = [w.inner.pid for w in self.wrks]
            super()._stop_workers()
            for pid in old:
                mark_dead(pid)

    server = Server(
        "cds_service:create_app",  # a name only: the loader below builds the application
        address=settings.host,
        port=settings.port,
        interface=Interfaces.WSGI,
        websockets=False,
        workers=settings.workers,
        blocking_threads=settings.threads,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS, keep_alive=True),
        log_access=False,
        respawn_failed_workers=True,
        workers_max_rss=WORKER_MAX_RSS_MIB,
        rss_samples=3,
        workers_kill_timeout=GRACEFUL_SECONDS,
        # a process title needs granian's optional setproctitle; without it, granian's default
        process_name="cds-service" if _has_setproctitle() else None,
    )
    loader: Callable[..., Any] = partial(load_granian_worker_app, overrides)
    server.serve(target_loader=loader)
