"""stripe-recon: reconcile an internal product catalog with Stripe, at Spark scale."""

__version__ = "0.1.0"
