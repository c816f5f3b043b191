"""Pure code: the planner's decisions, the config, durations, model names and ps snapshots.

Nothing here does I/O or imports anything of ours outside ``core``.
"""
