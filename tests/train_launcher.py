"""Starts `r1zero train` runs quickly, for the crash test: this process imports torch, transformers
and r1zero once, then forks one child per request; the child runs ``fault_points.main(argv)``, which
is exactly what ``python tests/fault_points.py train ...`` runs (``r1zero train`` with the pause
points its environment asks for), without paying the imports again (seconds on a 2-core machine).
The test kills the child (a real training process) with SIGKILL.

No torch operation runs in this process before forking, so no thread pool is copied half-alive
into a child.

Protocol (JSON lines): stdin {"argv": [...], "env": {...}, "log": path} -> stdout {"pid": N}, then
{"pid": N, "exit": code} with code negative for a signal (-9: SIGKILL).
"""
import json
import os
import sys
import traceback

import fault_points  # noqa: E402
import r1zero.training.trainer  # noqa: F401,E402
import transformers.models.llama.modeling_llama  # noqa: F401,E402 - what loading the tiny models imports
import transformers.models.qwen2.modeling_qwen2  # noqa: F401,E402


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the training process
            code = 1
            try:
                os.environ.update(req.get("env", {}))
                fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = fault_points.main(req["argv"])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"pid": pid, "exit": code}), flush=True)


if __name__ == "__main__":
    main()
