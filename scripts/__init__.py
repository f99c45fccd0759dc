"""What users and CI run: set-up, tests, the demo, benchmarks, training of the shipped models, the RTSP test
camera, a local Ray cluster and the GPU check; measurement tools in scripts/measure/."""
