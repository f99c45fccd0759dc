"""Sources: files, cameras, network streams and the synthetic stream behind one ``Source`` interface,
and the capture thread that reads one into a frame ring."""
