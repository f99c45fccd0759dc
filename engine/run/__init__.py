"""What a run is made of, whichever runner runs it (one box: ``engine/pipeline.py``; many machines:
``engine/cluster/``): its configuration, its loop and shutdown path, and the event records it builds."""
