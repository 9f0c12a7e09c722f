"""labcloud: offer a lab's analysis tools as a web service."""

__version__ = "0.1.0"
