"""The Celery executor, as a package: :mod:`.executor` (the plugin, on the server) and :mod:`.task` (the task
contract it shares with ``labcloud celery-worker``). Importing this package imports neither."""
