"""Data: the long-term forecasting protocol, long/wide CSV modules, offline series."""
