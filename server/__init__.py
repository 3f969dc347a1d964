"""sessiond: keeps AI-agent sessions in SQLite and runs them."""

__version__ = "0.1.0"
