"""The test-runner layer (SPEC §12): the pytest plugin and its managed proxy session."""
