"""Side-by-side benchmarks of kstlib.auth against its peers (``python -m bench``)."""
