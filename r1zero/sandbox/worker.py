"""Users' reward functions under a time limit, in a worker process that can be killed.

A user's reward is arbitrary Python. A signal cannot stop one stuck in C code (``2 ** (10 ** 10)``
holds the interpreter until the number is built), so each reward function runs in its own worker
process: the trainer sends a whole step's completions at once (one message, so the per-call cost
is one small pickle each way). A per-sample function answers one value per completion, and the
trainer waits at most ``timeout`` seconds for each answer; a TRL-form function (r1zero.sandbox.calls)
answers the whole batch in one call, and the trainer waits at most ``timeout`` x the batch's size
for it, the same total a per-sample function gets. A worker that misses the limit, or dies
(segfault, ``os._exit``), is killed with SIGKILL; that completion (for a TRL-form function: the
whole batch) scores 0 and is counted, and a fresh worker takes the rest of the batch.

The user's file is imported in the worker, never in the trainer: an import that raises, loops or
exits (``os._exit(0)``) is one RewardError line naming the file, raised when the worker starts
(RewardScorer starts its workers before any model loads), and the import gets the time limit too
(``load_timeout``). What the worker prints (stdout and stderr, its children's included) goes to a pipe
the trainer drains: the first OUTPUT_LINES lines go to the log, the rest is counted and dropped, so a
reward printing 50 MB neither floods the trainer's output nor blocks on a full pipe.

A worker leads its own process group: stopping it (time limit, death, close) SIGKILLs the group, so
the processes a reward starts end with it. With ``memory_limit`` (bytes) the worker caps its data
memory (RLIMIT_DATA: heap and private anonymous mappings, what an allocation takes; not the address
space of shared libraries, which an ``import torch`` fills with gigabytes it never uses): an
allocation beyond it fails (MemoryError, a counted failure of that sample) instead of taking the
memory the trainer needs. Children inherit the limit.

A worker exits when the trainer's end of its pipe closes, and on Linux the kernel kills it when
the trainer dies (PR_SET_PDEATHSIG), so a trainer killed with SIGKILL leaves no worker behind (what
a worker started is ended by the worker's own exit path, which a SIGKILL skips).
That signal follows the *thread* that started the worker, so workers are started from one
long-lived thread of the trainer's: a worker started by a scoring thread that then ends would die with it.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Mapping, Sequence

from r1zero.sandbox.calls import RewardBatch, score_batch, score_sample
from r1zero.sandbox.functions import RewardError, is_batched, load_reward_func, reward_name, rollout_args

log = logging.getLogger("r1zero")

# How long a fresh worker may take to import r1zero's own module (math-verify) by default; users'
# reward files get their reward_timeout (r1zero.rewards.scoring).
START_TIMEOUT_S = 120.0
OUTPUT_LINES = 20  # lines of a worker's output kept in the log (per RewardWorker, over its restarts)
_LINE_CHARS = 300


def _serve(spec: str, conn) -> None:
    """Worker loop: load the function (and say which form it has), then answer each RewardBatch:
    one value at a time (per-sample form) or the whole list at once (TRL's form)."""
    try:
        fn = load_reward_func(spec)
    except RewardError as e:  # one line naming the config key, the file and the fix
        conn.send(("failed", str(e)))
        return
    except BaseException as e:  # SystemExit (sys.exit at import), KeyboardInterrupt...
        conn.send(("failed", f"reward_funcs: importing '{spec.rpartition(':')[0]}' raised "
                             f"{type(e).__name__}: {str(e)[:200]}; fix its import"))
        return
    batched = is_batched(fn)
    conn.send(("ready", batched))
    wants = rollout_args(fn)
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):  # the trainer is gone (or closed us): end what the reward started
            _end_group()
            return
        if batched:
            conn.send(score_batch(fn, batch, wants))
            continue
        for i in range(len(batch)):
            conn.send(score_sample(fn, batch, i, wants))


def _end_group() -> None:
    """In the worker: SIGKILL its process group (the processes the reward started, and itself)."""
    sys.stdout.flush()
    try:
        os.killpg(0, signal.SIGKILL)
    except OSError:
        pass


def _limit_memory(limit: int) -> None:
    """In the worker, before the user's file is imported: cap its data memory at ``limit`` bytes."""
    if limit <= 0:
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # no resource module (Windows) or a hard limit already lower: that one applies


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

    The worker is a fresh ``python -m r1zero.sandbox.worker`` process (not a fork of the trainer,
    whose torch thread pools make forking unsafe, and not multiprocessing's spawn, which would
    re-run the user's main script). It talks over two private pipes, so a reward that prints
    cannot corrupt the protocol; it gets the trainer's ``sys.path`` so ``module:function`` resolves
    the same way.
    """

    def __init__(self, spec: str, timeout: float, *, load_timeout: float = START_TIMEOUT_S,
                 memory_limit: int | None = None):
        self.spec = spec
        self.timeout = float(timeout)
        self.load_timeout = float(load_timeout)
        self.memory_limit = int(memory_limit or 0)
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.out: Connection | None = None
        self.restarts = 0
        self.batched = False  # TRL's form: known once a worker has loaded the function
        self._lines_left = OUTPUT_LINES
        self._output_lock = threading.Lock()
        self._drainer: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker now (it loads the function); a function that cannot be loaded raises
        RewardError (one line). score() starts it otherwise, and restarts it after a kill."""
        if self.proc is None:
            self._start()

    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self.proc = _popen(
                [sys.executable, "-m", "r1zero.sandbox.worker", self.spec, str(to_child_r), str(from_child_w),
                 str(self.memory_limit)],
                pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._drainer = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True,
                                         name=f"r1zero-reward-output-{self.proc.pid}")
        self._drainer.start()
        self.out = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)
        target = self.spec.rpartition(":")[0]
        if not self.conn.poll(self.load_timeout):
            self._kill()
            raise RewardError(f"reward_funcs: importing '{target}' took over {self.load_timeout:g} s in its worker "
                              "(a loop at import?); make its import quick, or raise reward_timeout")
        try:
            status, said = self.conn.recv()
        except (EOFError, OSError):
            code = self.proc.wait()
            status, said = "failed", (f"reward_funcs: importing '{target}' ended its worker (exit code {code}); "
                                      "remove the exit or crash from the file's import")
        if status != "ready":
            self._kill()
            raise RewardError(said)
        self.batched = bool(said)

    def _drain(self, pipe) -> None:
        """Read everything a worker prints until its group is gone: the first lines go to the log,
        the rest is counted and dropped (reading it all keeps a printing reward from blocking)."""
        name, partial, dropped = reward_name(self.spec), b"", 0
        try:
            while True:
                chunk = os.read(pipe.fileno(), 1 << 16)
                if not chunk:
                    break
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()[:_LINE_CHARS * 4]  # a line without its end yet (bounded)
                for line in lines:
                    dropped += 0 if self._log_line(name, line) else 1
        except OSError:
            pass
        finally:
            pipe.close()
        if partial:
            dropped += 0 if self._log_line(name, partial) else 1
        if dropped:
            log.info("reward_funcs %s printed %d more lines (not shown; the first %d are above)", name, dropped,
                     OUTPUT_LINES)

    def _log_line(self, name: str, line: bytes) -> bool:
        with self._output_lock:
            if self._lines_left <= 0:
                return False
            self._lines_left -= 1
        text = line.decode("utf-8", "replace").rstrip()
        log.info("reward_funcs %s printed: %s", name, text[:_LINE_CHARS] + ("..." if len(text) > _LINE_CHARS else ""))
        return True

    def _kill(self) -> None:
        if self.proc is not None:
            self._kill_group()
            self.restarts += 1
        for c in (self.conn, self.out):
            if c is not None:
                c.close()
        self.proc = self.conn = self.out = None
        self._join_drainer()

    def close(self) -> None:
        if self.proc is not None:
            self.out.close()  # the worker reads EOF and returns
            try:  # at EOF the worker SIGKILLs its group (what the reward started, and itself)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill_group()
            self.conn.close()
        self.proc = self.conn = self.out = None
        self._join_drainer()

    def _kill_group(self) -> None:
        """SIGKILL the worker's process group (what the reward started, and the worker: nothing the
        function does can delay it), before the worker is reaped, while its pid, the group's id, is
        still ours; then reap it."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            self.proc.kill()
        self.proc.wait()

    def _join_drainer(self) -> None:
        """Wait (briefly) until the output of the stopped worker is logged: it ends at EOF, once its
        group is gone; a process that left the group (setsid) may hold the pipe, so not forever."""
        if self._drainer is not None:
            self._drainer.join(timeout=2.0)
            self._drainer = None

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
        """(value or None, why) per completion (r1zero.sandbox.calls): each completion gets at most
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


if __name__ == "__main__":  # the worker process: python -m r1zero.sandbox.worker SPEC READ_FD WRITE_FD MEMORY
    import signal

    # Ctrl-C reaches every process of the terminal's group; it is the trainer's to handle (one line),
    # and the trainer ends its workers, so a worker ignores it rather than print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _limit_memory(int(sys.argv[4]))
    _serve(sys.argv[1], _Duplex(Connection(int(sys.argv[2]), writable=False),
                                Connection(int(sys.argv[3]), readable=False)))
