"""The course files as package data (installed as ``gpucat.course_data``; gpucat reads them
with ``importlib.resources``): data/README.md says what they hold."""
