"""Forecast models fitted from a pipeline's history: the statistics behind calibration."""
