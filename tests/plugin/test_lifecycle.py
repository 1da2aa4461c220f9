"""classFactory, initGui and unload: everything added is removed again."""
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QAction, QDockWidget


def _flush_deletes():
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


def test_load_and_unload_leave_nothing_behind(qgis_iface, qgis_processing):
    import sarflood

    registry = QgsApplication.processingRegistry()
    registry.removeProvider("sarflood")  # a provider left by other tests would hide a leak
    window = qgis_iface.mainWindow()

    for _ in range(2):  # a second cycle: unload really freed what the first added
        plugin = sarflood.classFactory(qgis_iface)
        plugin.initProcessing()
        plugin.initGui()
        assert registry.providerById("sarflood") is not None
        assert {a.id() for a in registry.providerById("sarflood").algorithms()} >= {
            "sarflood:mapwater", "sarflood:otsu", "sarflood:floodextent", "sarflood:vectorize"}
        assert len(window.findChildren(QAction, "SarFloodRunAction")) == 1
        assert len(window.findChildren(QDockWidget, "SarFloodReviewDock")) == 1
        dialog = plugin.show_dialog()
        assert dialog.isVisible()

        plugin.unload()
        _flush_deletes()
        assert registry.providerById("sarflood") is None
        assert window.findChildren(QAction, "SarFloodRunAction") == []
        assert window.findChildren(QAction, "SarFloodReviewAction") == []
        assert window.findChildren(QDockWidget, "SarFloodReviewDock") == []
        assert [w for w in QCoreApplication.instance().topLevelWidgets()
                if w.objectName() == "SarFloodRunDialog"] == []


def test_qgis_process_mode_registers_the_provider_without_gui(qgis_iface, qgis_processing):
    """qgis_process calls initProcessing only; unload must still remove the provider."""
    import sarflood

    registry = QgsApplication.processingRegistry()
    registry.removeProvider("sarflood")
    plugin = sarflood.classFactory(qgis_iface)
    plugin.initProcessing()
    assert registry.algorithmById("sarflood:mapwater") is not None
    plugin.unload()
    assert registry.providerById("sarflood") is None
