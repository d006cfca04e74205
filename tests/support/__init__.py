"""Test helpers that start real services (no mocks): see seaweedfs.py.

tests/ is on sys.path under pytest (tests/conftest.py has no package), so import them as
`from support.seaweedfs import seaweedfs_server`; the session fixture `s3_server` wraps it.
"""
