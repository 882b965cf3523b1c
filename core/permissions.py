"""The permission choke point: every page, API endpoint and partial fetches objects through here.

Like NetBox's RestrictedQuerySet.restrict(): a list shows only what the user may see; an object
outside the user's scope is a 404 (no hint that it exists); a visible object without the action
permission is a 403.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, Q, QuerySet
from django.http import Http404
from guardian.core import ObjectPermissionChecker
from guardian.shortcuts import get_objects_for_user

M = TypeVar("M", bound=Model)

# Objects a request asked for that exist but are hidden from its caller (a 404 by design). The
# audit middleware opens a list per request and audits such a 404 as a denied access; core cannot
# import audit, so it only notes what it hid. None (the default) outside a request: nothing noted.
_hidden: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar("hms_hidden", default=None)


def watch_hidden() -> tuple[list[tuple[str, str]], contextvars.Token]:
    """Start noting hidden objects for the current request; returns the list and a reset token."""
    noted: list[tuple[str, str]] = []
    return noted, _hidden.set(noted)


def stop_watching_hidden(token: contextvars.Token) -> None:
    _hidden.reset(token)


def _note_hidden(obj: Model) -> None:
    noted = _hidden.get()
    if noted is not None:
        noted.append((obj._meta.label_lower, str(obj.pk)))


def _codename(qs: QuerySet, action: str) -> str:
    meta = qs.model._meta
    return f"{meta.app_label}.{action}_{meta.model_name}"


def restrict(qs: QuerySet[M], user: Any, action: str = "view") -> QuerySet[M]:
    """Objects of qs on which `user` has `action` (global or per-object permission)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return qs.none()
    if user.is_superuser:
        return qs
    allowed = get_objects_for_user(user, _codename(qs, action), qs, accept_global_perms=True, with_superuser=True)
    owner_field = getattr(qs.model, "owner_field", None)
    if owner_field:
        # An owner sees and acts on what they own (their own runs) without a per-object grant.
        allowed = qs.filter(Q(pk__in=allowed.values("pk")) | Q(**{f"{owner_field}_id": user.pk}))
    return allowed


class RestrictedQuerySet(QuerySet):
    """The choke point as a queryset method, so restriction reads as part of the query:
    `Service.objects.restrict(user, "scale")` (models of ours that users see use it as their
    manager)."""

    def restrict(self, user: Any, action: str = "view") -> QuerySet:
        return restrict(self, user, action)

    def get_for_user(self, user: Any, action: str = "view", **lookup: Any) -> Any:
        return get_for_user(self, user, action, **lookup)


def _checker(user: Any) -> ObjectPermissionChecker:
    """One guardian checker per user object (that is, per request): it caches the per-object
    permissions it loads, so "may view?" then "may run?" on one object costs one round of queries,
    as Django's ModelBackend already caches the global ones on the user."""
    checker = getattr(user, "_hms_perm_checker", None)
    if checker is None:
        checker = ObjectPermissionChecker(user)
        user._hms_perm_checker = checker
    return checker


def can(user: Any, action: str, obj: Model) -> bool:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    owner_field = getattr(obj, "owner_field", None)
    if owner_field and getattr(obj, f"{owner_field}_id", None) == user.pk:
        return True
    meta = obj._meta
    perm = f"{meta.app_label}.{action}_{meta.model_name}"
    if user.has_perm(perm):
        return True
    return obj.pk is not None and _checker(user).has_perm(perm, obj)


def has_perm(user: Any, perm: str) -> bool:
    """A global (model-level) permission such as fleet.manage_nodes: for what has no object to
    grant on (the swarm's nodes are the engine's, not the console's)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return user.is_superuser or user.has_perm(perm)


def can_many(user: Any, action: str, objs: Iterable[M]) -> set[Any]:
    """The pks of `objs` (one model) on which `user` may do `action`: can() for a whole page of
    rows at once. The same answer as can() per object, in a constant number of queries: the
    global permissions come from the user's cache, the per-object ones for all of `objs` in one
    guardian prefetch (two queries: the user's grants and their groups'), instead of a round of
    queries per object."""
    objs = [o for o in objs if o.pk is not None]
    if not objs or user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    if user.is_superuser:
        return {o.pk for o in objs}
    meta = objs[0]._meta
    perm = f"{meta.app_label}.{action}_{meta.model_name}"
    if user.has_perm(perm):
        return {o.pk for o in objs}
    allowed: set[Any] = set()
    owner_field = getattr(objs[0], "owner_field", None)
    if owner_field:
        allowed = {o.pk for o in objs if getattr(o, f"{owner_field}_id", None) == user.pk}
    rest = [o for o in objs if o.pk not in allowed]
    if rest:
        checker = _checker(user)  # the request's checker: a later can() on these rows is cached too
        checker.prefetch_perms(rest)
        allowed |= {o.pk for o in rest if checker.has_perm(perm, o)}
    return allowed


def get_for_user(qs: QuerySet[M], user: Any, action: str = "view", **lookup: Any) -> M:
    """404 if the user may not see it, 403 if they see it but may not do `action`.

    Fetch-then-check rather than restrict(...).get(): one indexed lookup plus the permission
    checks, instead of building guardian's object-permission subqueries for the whole table on
    every single-object request (measured: the subquery form was most of a dry run's time). The
    answer is the same: visible = global permission, per-object permission, or ownership."""
    missing = Http404(f"No {qs.model._meta.verbose_name} matches the given query.")
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        raise missing
    try:
        obj = qs.get(**lookup)
    except (qs.model.DoesNotExist, qs.model.MultipleObjectsReturned, ValueError, TypeError):
        raise missing from None
    if not can(user, "view", obj):
        _note_hidden(obj)  # audited as a denied access (audit.middleware), answered as absent
        raise missing  # exists, but not for this user: indistinguishable from absent
    if action != "view" and not can(user, action, obj):
        raise PermissionDenied(f"You may not {action} this {qs.model._meta.verbose_name}.")
    return obj
