"""Heartbeats of the django-q2 worker processes: each worker process (post_spawn) starts a thread
that writes its WorkerBeat row every BEAT_SECONDS, with whether it is running a task right now
(pre_execute / post_execute_in_worker, kept in memory, written with the next beat). With the ORM
broker django-q2's own cluster statistics live in each process's cache, invisible to the web
process; these rows are what /system/ and `healthcheck` can read for every cluster on every host."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from django.db import DatabaseError, close_old_connections
from django.utils import timezone

log = logging.getLogger(__name__)
BEAT_SECONDS = 2.0
_state = {"busy": False, "tasks": 0}


def _beat_forever(cluster: str) -> None:
    from console.models import WorkerBeat  # here: the worker process imports it once its app registry is ready

    key = {"host": socket.gethostname(), "pid": os.getpid()}
    started = timezone.now()
    stop = threading.Event()
    while True:
        try:
            close_old_connections()
            fields = {"cluster": cluster, "beat_at": timezone.now(), "busy": _state["busy"],
                      "tasks": _state["tasks"]}
            if not WorkerBeat.objects.filter(**key).update(**fields):
                WorkerBeat.objects.create(**key, started_at=started, **fields)
        except DatabaseError:
            pass  # the next beat tries again; an outage is logged by the loops that matter
        if stop.wait(BEAT_SECONDS):
            return


def on_spawn(sender: Any = None, **kwargs: Any) -> None:
    from django_q.conf import Conf  # here: django_q reads its settings when first imported

    threading.Thread(target=_beat_forever, args=(Conf.CLUSTER_NAME,), name="worker-beat", daemon=True).start()


def on_start(sender: Any = None, **kwargs: Any) -> None:
    _state["busy"] = True


def on_finish(sender: Any = None, **kwargs: Any) -> None:
    _state["busy"] = False
    _state["tasks"] += 1
