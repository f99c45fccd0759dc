"""Sinks: where records go (``base``), each kind in its own module, and the spec parser (``factory``)."""
