"""The PyQt6 desktop window: widgets, the engine worker, and the composition root."""
