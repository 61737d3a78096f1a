"""The composition root: builds the objects from the settings, starts them,
serves until told to stop, and stops whatever started (``server.py``); the
listeners it starts (``listeners.py``); what starting needs first
(``startup.py``)."""

from __future__ import annotations

from turnout.app.server import Server
from turnout.app.startup import StartupError

__all__ = ["Server", "StartupError"]
