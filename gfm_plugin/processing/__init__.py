"""Processing provider "GFM": batch processing and the graphical modeler reach the backend."""
