"""Agent Legs telemetry: one span and one action-log line per call (the ``Telemetry`` facade), and the log's readers.

The package, one idea per module:

* ``_facade``: ``Telemetry``, what ``Legs`` calls (intent, span, outcome line, shutdown);
* ``_semconv``: every span attribute name, as a constant (the table is its docstring);
* ``_spans``: the tracer choice, the span's parent (``caller_context`` and the adapters' parent hooks),
  the span's attributes;
* ``_records``: ``CallRecord`` and the arguments bounded for the log;
* ``_log_writer``: ``ActionLog`` (whole lines, rotation), the classified write errors;
* ``_journal``: the write-ahead intent journals (``actions.pending/``) and their recovery;
* ``_log_reader``: ``read_log`` and ``follow_log``;
* ``_export``: our own provider, the guarded OTLP exporter, ``application_provider()``.

Every name other modules, tests, benchmarks and the demo import from ``agent_legs._telemetry`` is
re-exported here. Importing this package imports no agent framework and no OTLP exporter.
"""

from __future__ import annotations

from ._export import application_provider
from ._export import traces_endpoint as _traces_endpoint
from ._facade import Telemetry
from ._journal import IntentJournal, recover_pending
from ._log_reader import follow_log, read_log
from ._log_writer import ActionLog, ActionLogError, describe_os_error, log_files
from ._records import CallRecord, bounded_arguments
from ._spans import PARENT_HOOKS_GROUP, ParentHook, register_parent_hook

__all__ = [
    "PARENT_HOOKS_GROUP",
    "ActionLog",
    "ActionLogError",
    "CallRecord",
    "IntentJournal",
    "ParentHook",
    "Telemetry",
    "_traces_endpoint",
    "application_provider",
    "bounded_arguments",
    "describe_os_error",
    "follow_log",
    "log_files",
    "read_log",
    "recover_pending",
    "register_parent_hook",
]
