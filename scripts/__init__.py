"""Scripts a person runs by hand (`python scripts/<name>.py`); importable for the tests."""
