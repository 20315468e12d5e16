"""Forecasting models: supervised baselines with official key layouts, and generative forecasters."""
