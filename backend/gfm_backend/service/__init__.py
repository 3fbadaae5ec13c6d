"""`gfm serve`: the local job service the QGIS plugin (and a GPU workstation) talks to.

One process owns the GPU and the job queue; jobs run the same task functions as the CLI
in worker processes, so a crash or out-of-memory in a job never takes the service down,
and job records live in SQLite so they survive restarts. The plugin never imports torch:
it only speaks HTTP to this service.
"""
