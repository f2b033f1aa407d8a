"""The data: examples as gpucat holds them (dataset.py), the course files (course.py), h5
files (h5.py) and every other format (inputs.py), training sets, batches and shards
(batches.py, shards.py), streaming from disk (streaming.py), downloads (fetch.py), `gpucat prepare`."""
