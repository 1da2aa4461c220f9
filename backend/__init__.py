"""SAR Flood Mapper inference backend: streaming ONNX water mapping over rasters of any size.

Imports only numpy, onnxruntime, rasterio and the standard library, with relative
imports, so it runs inside the QGIS plugin folder and as ``python -m backend``.
"""
__version__ = "0.1.0"
