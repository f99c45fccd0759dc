"""The frame ring: fixed slots of uint8 frames between a capture thread and the model (host memory on a
CPU, device memory with a side-stream upload on a GPU)."""
