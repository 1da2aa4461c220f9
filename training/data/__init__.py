"""Sen1Floods11 v1.1 data: layout, checked chip lists, raster reading, normalisation,
S2 index weak labels, and PyTorch datasets (``datasets`` imports torch; the rest is numpy)."""
