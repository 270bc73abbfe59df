"""netlab: real-Linux network labs, built for real and probed."""

__version__ = "0.1.0"
