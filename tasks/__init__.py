"""Prefect tasks: thin wrappers around library stages that add caching, retries and artifacts.

Importing this package sets project-local Prefect defaults *before* Prefect is imported:
PREFECT_HOME inside the project, analytics and telemetry off, a generous ephemeral-server
start-up timeout (the default 20 s times out on a busy 2-core machine).
"""

import os

from entrainment.paths import PROJECT_ROOT

for _key, _value in {
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "entrainment",
    "TOKENIZERS_PARALLELISM": "false",
    # library loggers also run outside flows (tests, notebooks): that is fine, not worth a warning
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}.items():
    os.environ.setdefault(_key, _value)

import logging  # noqa: E402

from entrainment.store.files import no_space  # noqa: E402

# What README promises at INFO (cleaning fixes, resumes, cache hits, dropped rows) reaches the console and the
# Prefect run log: Prefect attaches its handlers to the `entrainment` logger (PREFECT_LOGGING_EXTRA_LOGGERS).
logging.getLogger("entrainment").setLevel(logging.INFO)


class _BadInputIsOneLine(logging.Filter):
    """Prefect logs a failed task or flow with its traceback; for bad input (entrainment.errors.InputError) the CLI
    prints the one line that matters and exits 2, and for a full disk one line and exit 1, so Prefect's records
    about them are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (type(exc).__name__ == "InputError" or no_space(exc)[0]):
            return False  # bad input, or a full disk: the CLI's one line says it
        try:
            msg = record.getMessage()
            return not any(t in msg for t in ("InputError", "No space left on device", "unexpected pos"))
        except Exception:  # noqa: BLE001 -- a malformed record: let Prefect's own handling decide
            return True


for _name in ("prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine"):
    logging.getLogger(_name).addFilter(_BadInputIsOneLine())
