"""Training and evaluation of the two networks, and the DEMO bundles trained on phantoms."""
