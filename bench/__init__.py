"""The benchmark (bench/run): the harness, the floor it measures the proxy against, and
the raw upstream both stand on."""
