"""Facial-expression classifiers: datasets, preprocessing, training, evaluation and prediction.

The engine behind the dashboard; it never imports streamlit, so everything runs headless too.
"""

__version__ = "0.1.0"
