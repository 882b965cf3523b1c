"""Baseline for bench/bench_api.py: a bare Django view doing one INSERT. Routed only when
HMS_BENCH=1, so production never exposes it."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def bare_insert(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_bare (created, payload) VALUES (now(), %s) RETURNING id",
                       [request.body.decode()])
        row_id = cursor.fetchone()[0]
    return JsonResponse({"id": row_id})
