"""Hooks into other tools (Airflow, MLflow): each imports its tool only when used."""
