"""Watches ML models and the business goals they serve."""
__version__ = "0.1.0"
