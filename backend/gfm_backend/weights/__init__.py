"""Encoder weights a backend keeps: a catalog of the published ones, downloads that resume
and verify, and a store in the state folder's `weights/` whose names work wherever an
encoder or teacher is asked for."""
