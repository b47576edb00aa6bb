"""The benchmark suite: ``python -m benchmarks`` (the code is in ``npipes._bench``)."""
