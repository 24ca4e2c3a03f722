"""The HTTP edge: admin API, web page, STOW-RS ingress, health and metrics."""
