"""How a gunicorn worker of `cds-service serve` takes SIGINT and SIGQUIT (cli.worker_signals).

gunicorn's gthread worker shuts its thread pool down inside the SIGQUIT handler; a signal that lands
while the main thread holds the pool's lock (inside submit()) deadlocked the worker until the master
killed it 30 s later. Ctrl-C under load showed it. Each test runs in a child process, so the signal
handlers of the test process are untouched.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import os, signal, sys, threading
    from concurrent import futures
    from cds_service.cli import worker_signals
    from gunicorn.workers.gthread import ThreadWorker

    class Worker(ThreadWorker):  # the real handlers, without a server around them
        def __init__(self):
            self.alive = True
            self.tpool = futures.ThreadPoolExecutor(max_workers=2)
            class Queue:
                def defer(self, *a):
                    pass
            self.method_queue = Queue()

    w = Worker()
    worker_signals(w)  # with gunicorn's own handle_quit instead, this process hangs below
    assert signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.default_int_handler)
    # the main thread inside submit(): the pool's shutdown lock held when the signal arrives
    with w.tpool._shutdown_lock:
        os.kill(os.getpid(), signal.SIGQUIT)
        for _ in range(1000):  # give the handler a chance to run while the lock is held
            pass
    print("alive" if w.alive else "stopping", flush=True)
    w.tpool.shutdown(wait=False)
    os._exit(0)
""")


def test_sigquit_with_the_pool_lock_held_stops_the_worker_without_deadlock():
    try:
        done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker deadlocked on SIGQUIT with the pool's lock held") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopping"  # the graceful flag is set; the main loop then exits


def test_worker_ignores_the_terminals_sigint():
    code = ("import signal; from cds_service.cli import worker_signals\n"
            "class W:\n    def handle_exit(self, *a): pass\n"
            "worker_signals(W()); print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "
            "signal.getsignal(signal.SIGQUIT).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["True", "handle_exit"], done.stderr
