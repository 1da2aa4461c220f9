"""A synthetic Sen1Floods11: terrain, water, land cover, Sentinel-1, Sentinel-2, labels.

``python -m training synth --out DIR`` writes the v1.1 layout (see ``writer.py``);
the physics of each effect is documented, with sources, in the module that
simulates it (``terrain``, ``landcover``, ``sar``, ``optical``, ``scene``).
"""
