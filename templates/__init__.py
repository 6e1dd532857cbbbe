"""Jinja2 pages of the web console and their static files (shipped inside the wheel)."""
