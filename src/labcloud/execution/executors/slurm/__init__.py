"""The Slurm executor, as a package: :mod:`.executor` (the plugin: submitting, reconciling, explaining how
Slurm ended a job), and the two ways of reaching Slurm behind one :class:`~.batch.SlurmClient`:
:mod:`.commands` (sbatch, squeue, scontrol, sacct, scancel) and :mod:`.rest` (slurmrestd). :mod:`.batch` holds
what they share; it imports neither, and neither imports the executor.
"""
