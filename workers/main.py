"""Dramatiq's worker master, started by ``qbm worker`` as ``python -m workers.main workers.process ...``.

A thin wrapper around ``dramatiq.cli.main`` for two things Dramatiq's own entry point cannot do:

* JSON logs from the master too. Dramatiq runs with ``--skip-logging`` (its plain-text format would mix
  with ours); without this wrapper the master's own lines ("worker exited unexpectedly") would have no
  handler at all. Worker processes set up the same logging when they import the broker (workers/broker.py).
* Dramatiq's Prometheus exposition server, opt-in through ``QBM_WORKER_METRICS_PORT``. Its middleware
  reads ``dramatiq_prom_*`` variables when its module is imported in the worker processes, so they are set
  here, before any worker process starts. Each master gets its own multiprocess database directory, so
  two ``qbm worker`` on one machine (on different ports) never mix their numbers.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

from shared.runtime.config import ConfigError, load_config
from shared.runtime.logs import setup_logging


def main() -> int:
    try:
        config = load_config()
    except ConfigError as exc:  # `qbm worker` validated it already; only a direct start gets here
        setup_logging()
        logging.getLogger("qbm.worker").error("configuration error: %s", exc)
        return 2
    setup_logging(config.log_level, config.secrets)
    metrics_dir = None
    if config.worker_metrics_port:
        metrics_dir = tempfile.mkdtemp(prefix="qbm-worker-metrics-")
        os.environ.update(
            dramatiq_prom_host=config.worker_metrics_host,
            dramatiq_prom_port=str(config.worker_metrics_port),
            dramatiq_prom_db=metrics_dir,
        )
    from dramatiq.cli import main as dramatiq_main

    try:
        return dramatiq_main()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
