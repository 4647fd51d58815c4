"""Airflow provider for remote executions that are cancelled whenever their Airflow task dies."""

__version__ = "0.2.0"
