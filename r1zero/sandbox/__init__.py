"""A reward function called by name: loaded (functions.py), called in r1zero's per-sample or TRL's
per-batch form (calls.py), and run in a killable, time-limited worker process (worker.py). Users'
``reward_funcs`` (r1zero.rewards) and the math task's math-verify check (r1zero.tasks.math) share it,
so it sits below both."""
