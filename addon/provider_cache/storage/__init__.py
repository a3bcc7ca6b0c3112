"""Storage: the one module that owns LMDB (store.py), and the files of a cache directory."""
