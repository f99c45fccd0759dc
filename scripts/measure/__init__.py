"""Measurement tools: soak, faults, many cameras, cluster scaling, the window live, teach evaluation,
screenshots, and the fight-cctv accuracy and event figures. Run each from the repository root as a module
(``.venv/bin/python -m scripts.measure.soak``); they share :mod:`scripts.measure.harness`."""
