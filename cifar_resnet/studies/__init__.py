"""Studies of many runs: the architecture search (`search`, its design space `search_space`, its Optuna
storage `search_storage`, a throwaway PostgreSQL server `temporary_postgres`, one worker per GPU
`search_workers`) and plans of runs back to back (`sweep`).
Imports `training` and the layers below it, never `reporting`.
"""
