"""Browser tests: real JupyterLab / Notebook 7 in headless Chromium (see conftest.py)."""
