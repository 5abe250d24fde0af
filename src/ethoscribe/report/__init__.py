"""Self-contained HTML reports (Jinja2, images embedded) and the figures in them."""
