"""What ``qbm worker`` hands to Dramatiq (``python -m workers.main workers.process``): importing this module in a
Dramatiq worker process builds the process's services, installs its broker and declares the actors on it.

The only module with import-time effects in ``workers/``; everything else can be imported and tested in-process.
"""

from __future__ import annotations

from shared.runtime.config import load_config
from workers.actors import declare_actors
from workers.broker import install_broker
from workers.context import Context

context = Context(load_config())
broker = install_broker(context)
ACTORS = declare_actors(broker, lambda: context)
