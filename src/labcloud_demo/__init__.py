"""Demo apps bundled with labcloud.

Each module is a small command-line tool run as ``python -m labcloud_demo.<name>``:

- ``hello``  -- the smallest complete app (start here if you write your own tool),
- ``spikes`` -- threshold spike detection on an extracellular voltage trace,
- ``lif``    -- a leaky integrate-and-fire network swept over one parameter.

They follow the labcloud app conventions: human-readable log lines on stdout, progress lines of the
form ``::progress 0.420``, results written into the folder given by ``--out``, exit status 0 on success
and non-zero with a message on stderr otherwise. Submodules are not imported here so that
``python -m labcloud_demo.<name>`` runs cleanly.
"""

__all__ = ["__version__"]

__version__ = "1.0.0"
