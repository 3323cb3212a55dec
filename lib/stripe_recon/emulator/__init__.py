"""A stateful, Stripe-compatible local HTTP server for products and prices.

``EmulatorServer`` runs it in process (tests, benchmarks); ``serve`` runs it in the foreground
(``recon stripe-emulator``). See server.py for the API and the /_emulator control endpoints.
"""

from .faults import KINDS as FAULT_KINDS
from .faults import FaultConfig
from .server import EmulatorServer, serve

__all__ = ["EmulatorServer", "FaultConfig", "FAULT_KINDS", "serve"]
