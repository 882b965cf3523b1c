"""Baselines for bench/bench_api.py, routed only when HMS_BENCH=1 (production never exposes them).

- bare_insert: a bare Django view doing one INSERT (the issue's baseline).
- scale_floor: the least any audited scale must do, through the same ORM: resolve the bearer
  token, then in one transaction update the service's count and write its audit entry. No JSON
  schema, permission check, policies or status in the answer. It shows how much of the gap to the
  bare view is the work itself rather than the layers around it.
"""

from __future__ import annotations

import json

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.actions import resolve_token
from audit.actions import record
from fleet.models import Service


@csrf_exempt
def bare_insert(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_bare (created, payload) VALUES (now(), %s) RETURNING id",
                       [request.body.decode()])
        row_id = cursor.fetchone()[0]
    return JsonResponse({"id": row_id})


@csrf_exempt
def scale_floor(request: HttpRequest) -> JsonResponse:
    token = resolve_token(request.headers.get("Authorization", "").removeprefix("Bearer "))
    if token is None:
        return JsonResponse({"error": "unauthorized"}, status=401)
    body = json.loads(request.body)
    with transaction.atomic():
        Service.objects.filter(name=body["service"]).update(desired_instances=body["instances"])
        record("bench.scale_floor", actor=token.user, target_type="services.service", target_id=body["service"],
               payload={"to": body["instances"], "floor": True})
    return JsonResponse({"service": body["service"], "desired": body["instances"]})
