"""The QGIS side of SAR Flood Mapper.

Layout, from the outside in:

- ``main.py``: the plugin object QGIS creates (toolbar action, menu, dock, provider).
- ``processing/``: the Processing provider ``sarflood`` and its algorithms.
- ``gui/``: the run dialog, the review dock and the dependency installer dialog.
- ``controller.py``: starts a run from the dialog and puts its outputs on the map.
- ``task.py``, ``backend_process.py``, ``backend_env.py``: run ``python -m backend``
  as a child process and read its JSON lines; find the Python that runs it.
- ``params.py``: what a run needs, as dataclasses that become backend arguments.
- ``styles.py``, ``layers.py``: renderers and the layer group for outputs.
- ``review_run.py``: the run under review, kept in the project so its review survives reopening.

No numerics live here: rasters are read and written by the backend or by QGIS's
own algorithms.
"""
