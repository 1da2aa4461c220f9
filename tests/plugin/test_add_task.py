"""The plugin's tasks reach a thread of Qt's pool before QGIS's task manager can lose them.

QGIS's task manager takes the stale address of an ended task's runnable out of the pool's
queue, on the GUI thread; a new task's runnable at that address is deleted unrun, and the
task stays Queued for good (plugin/task.py, add_task). QThreadPool.clear(), on the GUI
thread right after the task is added, takes every queued runnable the same way.
"""
import re
import threading

from qgis.core import QgsTask
from qgis.PyQt.QtCore import QRunnable, QThreadPool

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


class _Holds(QRunnable):
    """Keeps a thread of the pool busy until ``go`` is set."""

    def __init__(self, started: threading.Semaphore, go: threading.Event):
        super().__init__()
        self.started, self.go = started, go

    def run(self) -> None:
        self.started.release()
        self.go.wait(60)


def test_a_task_added_while_every_thread_is_busy_is_taken_at_once_and_the_pool_limit_kept(qtbot):
    pool = QThreadPool.globalInstance()
    limit = pool.maxThreadCount()
    started, go = threading.Semaphore(0), threading.Event()
    holders = [_Holds(started, go) for _ in range(limit)]   # kept: Python owns them
    for holder in holders:
        holder.setAutoDelete(False)
        pool.start(holder)
    task = _Marks()
    try:
        for _ in holders:
            assert started.acquire(timeout=10)
        add_task(task)
        assert pool.maxThreadCount() == limit
        QThreadPool.globalInstance().clear()
    finally:
        go.set()
    qtbot.waitUntil(lambda: task.ran or task.status() == QgsTask.TaskStatus.Queued
                    and not pool.activeThreadCount(), timeout=10000)
    if not task.ran:
        task.cancel()
    assert task.ran, "lost: still queued, the pool idle"


def test_the_plugin_adds_its_tasks_through_add_task_only():
    adds = [f"{path.relative_to(REPO)}:{number}"
            for path in (REPO / "plugin").rglob("*.py")
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"\.addTask\(", line) and path.name != "task.py"]
    assert adds == []
