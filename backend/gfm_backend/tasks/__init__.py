"""Task functions: the single place each job's logic lives (CLI, service and plugin call them)."""
