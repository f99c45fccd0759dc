"""``dcrn run --cluster``: streams spread over a Ray cluster, one host actor per node."""
