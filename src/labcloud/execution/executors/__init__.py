"""Executors: where a claimed job runs. One module each, behind :class:`base.Executor`."""
