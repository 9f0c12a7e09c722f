"""Job execution: sandboxing, supervised processes and the job runner."""
