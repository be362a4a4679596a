"""Logging of the daemon: stdlib :mod:`logging` everywhere, Twisted's log fed into it.

Every module of the backend logs with ``logging.getLogger(__name__)``. This
module configures the handlers once, from the configuration (``[core]
log_level`` and ``log_file``) or from the launcher's options:

- records go to a file (a :class:`~logging.handlers.WatchedFileHandler`, so
  ``logrotate`` may move it away) or to standard error;
- on standard error under systemd (``$JOURNAL_STREAM`` names our stderr), each
  line starts with its syslog priority (``<6>``) and has no time stamp: the
  journal adds its own and keeps the level;
- Twisted's own events (:mod:`twisted.logger`) are handed to stdlib logging, to
  a logger named after the event's namespace (``twisted.*``), so there is one
  log with one format;
- :class:`sat.memory.crypto.SecretsFilter` is put on every handler, so a
  registered password never reaches the log.

Under ``twistd`` the direction is reversed, because ``twistd`` owns the log
there (``--logfile``, ``--syslog``, ``-n``): records are handed to
:mod:`twisted.logger` (see :func:`configure` with ``to_twisted=True``), plus a
file when ``log_file`` is set.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import IO, Any

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
STREAM_FORMAT = FILE_FORMAT
JOURNAL_FORMAT = "<%(syslog_priority)d>%(name)s: %(message)s"

# marks the handlers this module installed, so configuring again replaces them
_MARK = "_sat_handler"
_twisted_observer_installed = False


class JournalFormatter(logging.Formatter):
    """Prefix each line with its syslog priority, as systemd-journald reads it on stderr."""

    PRIORITIES = {
        logging.CRITICAL: 2,
        logging.ERROR: 3,
        logging.WARNING: 4,
        logging.INFO: 6,
        logging.DEBUG: 7,
    }

    def __init__(self):
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        priority = 7
        for level, prio in sorted(self.PRIORITIES.items(), reverse=True):
            if record.levelno >= level:
                priority = prio
                break
        record.syslog_priority = priority
        text = super().format(record)
        # continuation lines (tracebacks) keep the priority too
        return text.replace("\n", f"\n<{priority}>")


def stream_is_journal(stream: IO[Any], env: dict[str, str] | None = None) -> bool:
    """Whether ``stream`` is connected to systemd-journald (``$JOURNAL_STREAM`` is its dev:inode)."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def secrets_filter() -> logging.Filter | None:
    """A :class:`sat.memory.crypto.SecretsFilter` if that module is importable, else None."""
    try:
        from sat.memory.crypto import SecretsFilter
    except ImportError as e:
        if e.name in ("sat.memory.crypto", "sat.memory"):
            return None  # not written/installed: nothing to filter with
        logging.getLogger(__name__).warning("secrets filter unavailable: %s", e)
        return None
    return SecretsFilter()


class TwistedLogHandler(logging.Handler):
    """Hand stdlib records to :mod:`twisted.logger` (used under ``twistd``, which owns the log)."""

    def __init__(self, level: int = logging.NOTSET):
        super().__init__(level)
        from twisted.logger import Logger

        self._loggers: dict[str, Any] = {}
        self._logger_class = Logger

    def emit(self, record: logging.LogRecord) -> None:
        from twisted.logger import LogLevel

        try:
            message = self.format(record)
            logger = self._loggers.get(record.name)
            if logger is None:
                logger = self._loggers[record.name] = self._logger_class(namespace=record.name)
            if record.levelno >= logging.CRITICAL:
                level = LogLevel.critical
            elif record.levelno >= logging.ERROR:
                level = LogLevel.error
            elif record.levelno >= logging.WARNING:
                level = LogLevel.warn
            elif record.levelno >= logging.INFO:
                level = LogLevel.info
            else:
                level = LogLevel.debug
            # the text is already formatted: escape braces for twisted's format syntax
            logger.emit(level, message.replace("{", "{{").replace("}", "}}"))
        except Exception:
            self.handleError(record)


class StdlibObserver:
    """A :mod:`twisted.logger` observer writing events to stdlib loggers.

    Events go to the logger named after their namespace (prefixed with
    ``twisted.`` when it is not a Twisted module already), so they can be
    filtered like any other logger. Formatting is only done for records some
    handler will take.
    """

    def __init__(self, prefix: str = "twisted"):
        from twisted.logger import LogLevel

        self.prefix = prefix
        self._levels = {
            LogLevel.debug: logging.DEBUG,
            LogLevel.info: logging.INFO,
            LogLevel.warn: logging.WARNING,
            LogLevel.error: logging.ERROR,
            LogLevel.critical: logging.CRITICAL,
        }

    def _logger_name(self, event: dict) -> str:
        namespace = event.get("log_namespace") or self.prefix
        if namespace == self.prefix or namespace.startswith(self.prefix + "."):
            return namespace
        return f"{self.prefix}.{namespace}"

    def __call__(self, event: dict) -> None:
        from twisted.logger import formatEvent

        level = self._levels.get(event.get("log_level"), logging.INFO)
        logger = logging.getLogger(self._logger_name(event))
        if not logger.isEnabledFor(level):
            return
        failure = event.get("log_failure")
        exc_info = None
        if failure is not None:
            exc_info = (failure.type, failure.value, failure.getTracebackObject())
        text = formatEvent(event)
        logger.log(level, "%s", text, exc_info=exc_info)


def _twisted_to_stdlib() -> None:
    """Start Twisted's logging system with one observer: :class:`StdlibObserver` (once)."""
    global _twisted_observer_installed
    if _twisted_observer_installed:
        return
    from twisted.logger import globalLogBeginner

    # redirectStandardIO=False: our stderr handler writes to sys.stderr, which must stay a file
    globalLogBeginner.beginLoggingTo([StdlibObserver()], redirectStandardIO=False)
    _twisted_observer_installed = True


def _remove_our_handlers(root: logging.Logger) -> None:
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
            handler.close()


def configure(
    level: str | int = "info",
    log_file: str | os.PathLike | None = None,
    *,
    stream: IO[str] | None = None,
    to_twisted: bool = False,
    capture_twisted: bool = True,
) -> list[logging.Handler]:
    """Configure the root logger; return the handlers installed.

    :param level: ``debug``, ``info``, ``warning``, ``error`` (or a logging level)
    :param log_file: write the log to this file (created with its directory);
        None: to ``stream`` (standard error by default), unless ``to_twisted``
    :param stream: stream used when there is no log file
    :param to_twisted: hand records to :mod:`twisted.logger` instead of a
        stream (under ``twistd``); a ``log_file`` is still written
    :param capture_twisted: hand Twisted's events to stdlib logging (not with
        ``to_twisted``, which would loop)
    """
    if isinstance(level, str):
        try:
            level = LEVELS[level.lower()]
        except KeyError:
            raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})") from None
    root = logging.getLogger()
    _remove_our_handlers(root)
    handlers: list[logging.Handler] = []
    if log_file:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
        handlers.append(handler)
    if to_twisted:
        handler = TwistedLogHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(handler)
    elif not log_file:
        out = sys.stderr if stream is None else stream
        handler = logging.StreamHandler(out)
        if stream_is_journal(out):
            handler.setFormatter(JournalFormatter())
        else:
            handler.setFormatter(logging.Formatter(STREAM_FORMAT))
        handlers.append(handler)
    filter_ = secrets_filter()
    for handler in handlers:
        setattr(handler, _MARK, True)
        if filter_ is not None:
            handler.addFilter(filter_)
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    if capture_twisted and not to_twisted:
        _twisted_to_stdlib()
    return handlers


def configure_from_config(
    config,
    *,
    log_file: str | os.PathLike | None | bool = True,
    stream: IO[str] | None = None,
    to_twisted: bool = False,
) -> list[logging.Handler]:
    """:func:`configure` from ``[core] log_level`` and ``log_file`` of ``config``.

    ``log_file=True`` (the default) uses the configured file; None or False
    ignore it (the foreground daemon logs to standard error); a path overrides it.
    """
    if log_file is True:
        log_file = config.get("core", "log_file")
    elif log_file is False:
        log_file = None
    return configure(
        config.get("core", "log_level"), log_file, stream=stream, to_twisted=to_twisted
    )
