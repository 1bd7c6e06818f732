"""Tasks: data, prompt and reward of each problem family. ``get_task(name, reward=..., template=...)``;
``name`` may also be the user's own Task subclass, ``module:Class`` or ``path/to/file.py:Class``."""
from r1zero.tasks.base import Score, Task, TaskError, build_task, get_task, register_task, task_class, task_names

# Importing the modules registers their tasks.
from r1zero.tasks import countdown as _countdown  # noqa: F401,E402
from r1zero.tasks import custom as _custom  # noqa: F401,E402
from r1zero.tasks import gsm8k as _gsm8k  # noqa: F401,E402
from r1zero.tasks import math as _math  # noqa: F401,E402
from r1zero.tasks import sums as _sums  # noqa: F401,E402

__all__ = ["Score", "Task", "TaskError", "build_task", "get_task", "register_task", "task_class", "task_names"]
