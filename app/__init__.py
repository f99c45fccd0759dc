"""Entry points: the ``dcrn`` command line and the PyQt6 desktop window."""
