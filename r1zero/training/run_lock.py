"""One run per ``output_dir``: a lock file holding the owner's pid and host.

Two runs writing one folder interleave their metrics and overwrite each other's checkpoints, so a
second run is refused in one line naming the first. A lock left by a run that died without
removing it (SIGKILL, power loss) is stale when its host is this one and its pid no longer runs:
it is taken over. A lock of another host (a shared file system) is never taken over: its pid
cannot be checked from here, and the message says how to remove it.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from r1zero.errors import ConfigError
from r1zero.training import distributed as dist

LOCK = "r1zero.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a zombie (dead, not yet reaped) is not a run
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunLock:
    """Held from ``acquire`` until ``release`` (or the process ends: a dead pid frees it)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        # Written whole beside the lock, then linked into place (fails if a lock is there): a lock file
        # is never seen half-written, also when its run is killed while taking it.
        own_note = self.path.with_name(f"{LOCK}.{me['pid']}.tmp")
        own_note.write_text(json.dumps(me), encoding="utf-8")
        try:
            for _ in range(10):  # each round either takes the lock or removes one stale lock
                try:
                    os.link(own_note, self.path)
                except FileExistsError:
                    self._take_over_or_refuse(me)
                    continue
                self.held = True
                return
        finally:
            own_note.unlink(missing_ok=True)
        raise ConfigError(f"output_dir: could not take {self.path} (other runs keep taking it); try again")

    def _take_over_or_refuse(self, me: dict) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:  # released meanwhile
            return
        try:
            owner = json.loads(text)
            pid, host = int(owner["pid"]), str(owner["host"])
        except (ValueError, KeyError, TypeError):  # not a lock r1zero wrote (it writes them whole)
            owner, pid, host = {}, -1, me["host"]
        # Stale: a dead process of this host, or this very process (a run in it that ended without
        # releasing, e.g. one that was refused after taking the lock).
        if host == me["host"] and (pid == me["pid"] or pid < 0 or not _alive(pid)):
            stale = self.path.with_name(f"{LOCK}.stale-{me['pid']}")
            try:  # renamed, not removed: of two runs taking over at once, one rename finds nothing
                os.replace(self.path, stale)
            except FileNotFoundError:
                return
            if stale.read_text(encoding="utf-8") != text:  # another run took over first: give its lock back
                try:
                    os.link(stale, self.path)
                except FileExistsError:
                    pass
            stale.unlink(missing_ok=True)
            return
        raise ConfigError(f"output_dir: {self.path.parent} is in use by another run (pid {pid} on {host} since "
                          f"{owner.get('since', '?')}); wait for it to end or choose another output_dir "
                          f"(if that run is gone, delete {self.path})")

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                if json.loads(self.path.read_text(encoding="utf-8")).get("pid") == os.getpid():
                    self.path.unlink()
            except (OSError, ValueError):
                pass


def take_lock(output_dir: Path, env) -> RunLock:
    """Take ``output_dir``'s lock (rank 0, for every rank of a torchrun run ``env``) or refuse the run
    in one line on every rank; released at exit too, when the run ends in an error."""
    lock, refused = RunLock(output_dir), None
    if env.is_main:
        try:
            lock.acquire()
        except ConfigError as e:
            refused = str(e)
    refused = dist.broadcast(refused, env)
    if refused:
        raise ConfigError(refused)
    atexit.register(lock.release)
    return lock

