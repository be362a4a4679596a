"""jp: the command-line client of the SàT daemon (``python -m sat_frontends.jp``)."""

__version__ = "0.1.0"
