"""Tasks: data, prompt and reward of each problem family. ``get_task(name, reward=..., template=...)``."""
from r1zero.tasks.base import Score, Task, TaskError, build_task, get_task, register_task, task_names

# Importing the modules registers their tasks.
from r1zero.tasks import countdown as _countdown  # noqa: F401,E402
from r1zero.tasks import gsm8k as _gsm8k  # noqa: F401,E402
from r1zero.tasks import math as _math  # noqa: F401,E402

__all__ = ["Score", "Task", "TaskError", "build_task", "get_task", "register_task", "task_names"]
