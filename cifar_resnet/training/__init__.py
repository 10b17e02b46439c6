"""Training: the engine (`engine`: `Trainer`, its step and epoch loop) with its parts (`ema`, `sam`,
`history`'s rows), whether a run should start here (`launch_policy`), and runs that survive a disconnected
notebook (`session`). Writes the run folder of `run_folder`; imports `config`, `models`, `formats`, `data`
and `evaluation`, never `studies` or `reporting`.
"""
