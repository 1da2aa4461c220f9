"""The plugin's tasks reach a free thread of Qt's pool before QGIS's task manager can lose them.

QGIS's task manager takes the stale address of an ended task's runnable out of the pool's
queue, on the GUI thread; a new task's runnable at that address is deleted unrun, and the
task stays Queued for good (plugin/task.py, add_task). QThreadPool.clear(), on the GUI
thread right after the task is added, takes every queued runnable the same way.
"""
import re

from qgis.core import QgsTask
from qgis.PyQt.QtCore import QThreadPool

from sarflood.plugin.task import add_task

from tests.conftest import REPO


class _Marks(QgsTask):
    def __init__(self):
        super().__init__("SAR Flood Mapper: test task", QgsTask.Flags())
        self.ran = False

    def run(self) -> bool:  # worker thread
        self.ran = True
        return True


def test_a_task_added_is_not_lost_to_a_take_from_the_queue_that_follows(qtbot):
    # a plain addTask lost about 3 in 10 here, on 2 cores (its runnable still queued
    # while the woken pool thread had not yet taken it)
    tasks = []
    try:
        for _ in range(20):
            task = _Marks()
            tasks.append(task)
            add_task(task)
            QThreadPool.globalInstance().clear()
            qtbot.waitUntil(lambda: task.ran or task.status() == QgsTask.TaskStatus.Queued
                            and not QThreadPool.globalInstance().activeThreadCount(), timeout=10000)
            assert task.ran, f"task {len(tasks)} of 20 lost: still queued, the pool idle"
    finally:
        for task in tasks:
            if not task.ran:   # a task lost stays queued: cancelled, it ends
                task.cancel()


def test_the_plugin_adds_its_tasks_through_add_task_only():
    adds = [f"{path.relative_to(REPO)}:{number}"
            for path in (REPO / "plugin").rglob("*.py")
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"\.addTask\(", line) and path.name != "task.py"]
    assert adds == []
