"""Benchmarks of SàT, each printed beside a baseline measured in the same run.

Run them with ``python -m bench`` (see ``bench/README.md``); add one with
:func:`bench.runner.benchmark` in a ``bench/bench_<topic>.py`` module.

Importing this package imports nothing else: the baseline worker processes
(``python -m bench.common``) must stay free of Twisted and of the daemon's code.
"""
