"""The `kilolearn anomaly` command (kilolearn.device.anomaly)."""

from __future__ import annotations

from .anomaly import add_arguments
from .anomaly import cmd as run

__all__ = ["add_arguments", "run"]
