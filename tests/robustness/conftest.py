def pytest_configure(config):
    # Also registered in pyproject.toml once the lead adds it; registering twice is harmless.
    config.addinivalue_line("markers", "fuzz: long fuzz campaigns over the loader and the calibration reader (pytest -m fuzz)")
