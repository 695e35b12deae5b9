"""The package version, in one place (read by `sdfp_hf.__version__`, masks, the Hub client's user agent)."""

__version__ = "0.2.0"
