"""``python -m r1zero`` (and ``torchrun -m r1zero``) is the ``r1zero`` command; its console script
runs ``program`` too."""
import os
import sys


def program() -> int:
    """The ``r1zero`` command as a program: ``r1zero.cli.main`` on sys.argv, a ``train`` run first
    restarted with huge pages for the heap (r1zero.host_memory). Decided before torch is
    imported (1.5 s the restart would pay twice); ``main`` called from Python never restarts its caller."""
    if sys.argv[1:2] == ["train"]:
        from r1zero.host_memory import huge_pages_command

        again = huge_pages_command(sys.orig_argv, dict(os.environ))
        if again is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.execve(sys.executable, [sys.executable] + again[0][1:], again[1])
    from r1zero.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(program())
