"""The web dashboard's static files (served by transports/ui.py)."""
