"""LLM Training Lab: the package every notebook, app, CLI command and test shares."""

import logging

# bitsandbytes looks for an optional CPU kernel on the Hub and logs a warning when offline; the
# fallback it uses instead is correct, so the line only alarms learners.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.1.0"
