"""A trained network answering new paintings: the Python API (``Predictor``) and the demo page."""
