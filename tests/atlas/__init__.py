"""The local Atlas Administration API server (server.py) and the tests that run the Atlas lease life cycle over it."""
