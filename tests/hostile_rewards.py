"""User reward functions that misbehave in every way a reward can (tests/test_reliability.py).

``hang_in_c`` is stuck in C code: building 2 ** (10 ** 10) holds the interpreter, so no signal
handler runs until it is done (minutes); only killing the process stops it.
"""
import math
import os


def good(completion, **fields):
    return len(completion) / 100.0


def hang_in_c(completion, **fields):
    if "hang" in completion:
        return 2 ** (10 ** 10)
    return 1.0


def hang_in_python(completion, **fields):
    if "hang" in completion:
        while True:
            pass
    return 1.0


def misbehave(completion, **fields):
    """Behaviour chosen by the completion's first word."""
    kind = completion.split(" ", 1)[0]
    if kind == "raise":
        raise ZeroDivisionError("boom")
    if kind == "none":
        return None
    if kind == "nan":
        return math.nan
    if kind == "inf":
        return -math.inf
    if kind == "list":
        return [1.0, 2.0]
    if kind == "text":
        return "1.0"
    if kind == "die":
        os._exit(3)
    return 0.5


def always_raises(completion, **fields):
    raise KeyError("answer")


def echo_target(completion, target=None, prompt=None, **fields):
    """Checks that example fields and the prompt reach the worker."""
    return float(target) + (0.5 if prompt == "P" else 0.0)


def fails_on_odd_length(completion, **fields):
    if len(completion) % 2:
        raise ValueError("odd")
    return 1.0


def prints_a_lot(completion, **fields):
    """20 numbered lines, then 25 MB on stdout and 25 MB on stderr (50 MB a call), also from C-level writes."""
    import sys

    for i in range(20):
        print(f"line {i} of {completion}")
    sys.stdout.write("x" * (25 << 20) + "\n")
    sys.stdout.flush()
    os.write(2, b"y" * (25 << 20) + b"\n")
    return 1.0


def starts_a_child(completion, pid_file=None, **fields):
    """Starts `sleep 300`, writes its pid to ``pid_file``; hangs when asked to (then it is killed)."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    with open(pid_file, "w") as f:
        f.write(str(child.pid))
    if "hang" in completion:
        while True:
            pass
    return 1.0


def allocates(completion, **fields):
    """1 GiB for "big" (bytes(n) is calloc'd: the pages are never touched, so it costs no real memory
    where no limit refuses it), else nothing."""
    if completion == "big":
        block = bytes(1 << 30)
        return float(len(block) >> 30)
    return 0.5
