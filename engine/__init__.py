"""Streaming: sources, capture, ring buffer, preprocess, backends, state slots, postprocess, sinks."""
