"""The ``mobilevt`` command line."""
