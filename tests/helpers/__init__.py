"""Plain helpers the tests share (pictures, tiny models, store rows, damaged files); the fixtures
built from them are in ``tests/conftest.py``. Nothing here imports torch at package import, so a
child process can import a helper module quickly."""
