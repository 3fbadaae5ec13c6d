"""GFM backend: geospatial foundation model inference, fine-tuning and continual pretraining.

Implements GFM (Mendieta, Han, Shi, Zhu, Chen: "Building Geospatial Foundation
Models via Continual Pretraining", ICCV 2023) for the GFM QGIS plugin. Never imports qgis.
"""

__version__ = "0.1.0"
