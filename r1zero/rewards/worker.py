"""Users' reward functions under a time limit, in a worker process that can be killed.

A user's reward is arbitrary Python. A signal cannot stop one stuck in C code (``2 ** (10 ** 10)``
holds the interpreter until the number is built), so each reward function runs in its own worker
process: the trainer sends a whole step's completions at once (one message, so the per-call cost
is one small pickle each way). A per-sample function answers one value per completion, and the
trainer waits at most ``timeout`` seconds for each answer; a TRL-form function (r1zero.rewards.calls)
answers the whole batch in one call, and the trainer waits at most ``timeout`` x the batch's size
for it, the same total a per-sample function gets. A worker that misses the limit, or dies
(segfault, ``os._exit``), is killed with SIGKILL; that completion (for a TRL-form function: the
whole batch) scores 0 and is counted, and a fresh worker takes the rest of the batch.

A worker exits when the trainer's end of its pipe closes, and on Linux the kernel kills it when
the trainer dies (PR_SET_PDEATHSIG), so a trainer killed with SIGKILL leaves no worker behind.
That signal follows the *thread* that started the worker, so workers are started from one
long-lived thread of the trainer's: a worker started by a scoring thread that then ends would die with it.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Mapping, Sequence

from r1zero.rewards.calls import RewardBatch, score_batch, score_sample
from r1zero.rewards.functions import is_batched, load_reward_func, rollout_args

log = logging.getLogger("r1zero")

# How long a fresh worker may take to import the user's module (not part of any completion's limit).
START_TIMEOUT_S = 120.0


def _serve(spec: str, conn) -> None:
    """Worker loop: load the function (and say which form it has), then answer each RewardBatch:
    one value at a time (per-sample form) or the whole list at once (TRL's form)."""
    try:
        fn = load_reward_func(spec)
    except Exception as e:
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    batched = is_batched(fn)
    conn.send(("ready", batched))
    wants = rollout_args(fn)
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):  # the trainer is gone
            return
        if batched:
            conn.send(score_batch(fn, batch, wants))
            continue
        for i in range(len(batch)):
            conn.send(score_sample(fn, batch, i, wants))


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when the trainer dies, even mid-computation."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass  # elsewhere the worker still exits at its next read (EOF)


_spawner: tuple[int, ThreadPoolExecutor] | None = None  # (pid, its thread): a forked child needs its own
_spawner_lock = threading.Lock()


def _popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` run by one thread that lives as long as the process (see the module
    docstring: the kernel's parent-death signal is sent when the starting thread ends)."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner[0] != os.getpid():
            _spawner = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="r1zero-reward-workers"))
    return _spawner[1].submit(subprocess.Popen, *args, **kwargs).result()


class _Duplex:
    """Two one-way pipes seen as one connection."""

    def __init__(self, r: Connection, w: Connection):
        self.recv, self.send = r.recv, w.send


class RewardWorker:
    """One user reward function (``module:function``) in a killable worker process.

    The worker is a fresh ``python -m r1zero.rewards.worker`` process (not a fork of the trainer,
    whose torch thread pools make forking unsafe, and not multiprocessing's spawn, which would
    re-run the user's main script). It talks over two private pipes, so a reward that prints
    cannot corrupt the protocol; it gets the trainer's ``sys.path`` so ``module:function`` resolves
    the same way.
    """

    def __init__(self, spec: str, timeout: float):
        self.spec = spec
        self.timeout = float(timeout)
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.out: Connection | None = None
        self.restarts = 0
        self.batched = False  # TRL's form: known once a worker has loaded the function

    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self.proc = _popen(
                [sys.executable, "-m", "r1zero.rewards.worker", self.spec, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.out = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)
        if not self.conn.poll(START_TIMEOUT_S):
            self._kill()
            raise RuntimeError(f"reward_funcs: '{self.spec}' did not load within {START_TIMEOUT_S:.0f} s")
        try:
            status, said = self.conn.recv()
        except EOFError:
            status, said = "failed", "the worker exited"
        if status != "ready":
            self._kill()
            raise RuntimeError(f"reward_funcs: '{self.spec}' failed to load in its worker ({said})")
        self.batched = bool(said)

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # SIGKILL: nothing the function does can delay it
            self.proc.wait()
            self.restarts += 1
        for c in (self.conn, self.out):
            if c is not None:
                c.close()
        self.proc = self.conn = self.out = None

    def close(self) -> None:
        if self.proc is not None:
            self.out.close()  # the worker reads EOF and returns
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.conn.close()
        self.proc = self.conn = self.out = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __call__(self, completions: Sequence[str], examples: Sequence[Mapping[str, Any]],
                 prompts: Sequence[str | None], rollouts: Sequence[Mapping[str, Any] | None] | None = None,
                 ) -> list[tuple[float | None, str | None]]:
        """score() of the batch these lists make (``rollouts``: each completion's length and truncation)."""
        n = len(completions)
        return self.score(RewardBatch(list(completions), [dict(e) for e in examples], list(prompts),
                                      list(rollouts) if rollouts is not None else [None] * n))

    def score(self, batch: RewardBatch) -> list[tuple[float | None, str | None]]:
        """(value or None, why) per completion (r1zero.rewards.calls): each completion gets at most
        ``timeout`` seconds, a TRL-form call ``timeout`` x its completions for all of them."""
        n = len(batch)
        out: list[tuple[float | None, str | None]] = [(None, "not scored")] * n
        i = 0
        while i < n:
            if self.proc is None:
                self._start()
            try:
                self.out.send(batch.tail(i) if i else batch)
            except Exception as e:  # an example field that cannot be pickled: these samples fail, counted
                self._kill()
                for j in range(i, n):
                    out[j] = (None, f"cannot send to the worker ({type(e).__name__})")
                return out
            if self.batched:
                return self._answer_batch(n)
            while i < n:
                if not self.conn.poll(self.timeout):
                    out[i] = (None, f"timed out after {self.timeout:g} s")
                    self._kill()
                    i += 1
                    break
                try:
                    out[i] = self.conn.recv()
                except (EOFError, OSError):
                    out[i] = (None, self._died())
                    i += 1
                    break
                i += 1
        return out

    def _answer_batch(self, n: int) -> list[tuple[float | None, str | None]]:
        """The worker's one answer to a TRL-form call of ``n`` completions, or n failures."""
        limit = self.timeout * n
        if not self.conn.poll(limit):
            self._kill()
            return [(None, f"timed out after {limit:g} s ({n} completions x {self.timeout:g} s)")] * n
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return [(None, self._died())] * n

    def _died(self) -> str:
        """Why a worker stopped answering (it died); it is cleaned up for a fresh start."""
        code = self.proc.poll() if self.proc is not None else None
        self._kill()
        return f"worker died (exit code {code})"


def worker_pid(worker: RewardWorker) -> int | None:
    """The worker's process id (tests use it to check that a stuck worker was replaced)."""
    return worker.proc.pid if worker.proc is not None else None


__all__ = ["RewardWorker", "worker_pid", "START_TIMEOUT_S"]


if __name__ == "__main__":  # the worker process: python -m r1zero.rewards.worker SPEC READ_FD WRITE_FD
    import signal

    # Ctrl-C reaches every process of the terminal's group; it is the trainer's to handle (one line),
    # and the trainer ends its workers, so a worker ignores it rather than print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _serve(sys.argv[1], _Duplex(Connection(int(sys.argv[2]), writable=False),
                                Connection(int(sys.argv[3]), readable=False)))
