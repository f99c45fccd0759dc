"""``dcrn bench``: step times per backend, the end-to-end pipeline, and the report that prints them."""
