"""``dcrn run --cluster``: streams spread over a Ray cluster, one host actor per node (docs/SCALING.md).

- ``connect``: joining or starting Ray, and watching that its head still answers;
- ``placement``: pins, the nodes the driver knows, and the node a stream goes to;
- ``host``: the :class:`StreamHost` actor on each node, and the checkpoint file it is sent;
- ``driver``: :class:`ClusterRun`, which places the streams, pulls their records, moves them off a lost
  node and writes everything to this machine's sinks.
"""
