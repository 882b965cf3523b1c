"""Verification of the chain in the database (the command, the page's button and its task)."""

from __future__ import annotations

from django.utils import timezone

from audit.chain import HASHED_FIELDS, OPTIONAL_HASHED_FIELDS, VerifyResult, verify_entries
from audit.models import AuditEntry, AuditVerification

FIELDS = ("id", *HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS, "prev_hash", "hash")


def verify_database(*, chunk_size: int = 5000) -> VerifyResult:
    """Walk every sealed entry in seq order (streamed: constant memory at millions of rows)."""
    pending = AuditEntry.objects.filter(seq__isnull=True).count()
    entries = (AuditEntry.objects.filter(seq__isnull=False).order_by("seq").values(*FIELDS)
               .iterator(chunk_size=chunk_size))
    return verify_entries(entries, pending=pending)


def oldest_pending_age() -> float | None:
    """Seconds since the oldest pending entry was written: a large value means no sealer runs."""
    oldest = AuditEntry.objects.filter(seq__isnull=True).order_by("id").values_list("created_at", flat=True).first()
    return (timezone.now() - oldest).total_seconds() if oldest else None


def run_verification(verification_id: int) -> None:
    """Task body for the page's "Verify chain" (a django-q2 task for big logs). Safe to run twice:
    the claim is a conditional update from queued to running."""
    claimed = AuditVerification.objects.filter(pk=verification_id, status=AuditVerification.Status.QUEUED).update(
        status=AuditVerification.Status.RUNNING)
    if not claimed:
        return  # another worker got there first
    try:
        result = verify_database()
    except Exception as exc:  # reported on the page rather than lost in a worker log
        AuditVerification.objects.filter(pk=verification_id).update(
            status=AuditVerification.Status.FAILED, problem=str(exc)[:2000], finished_at=timezone.now())
        raise
    AuditVerification.objects.filter(pk=verification_id).update(
        status=AuditVerification.Status.INTACT if result.ok else AuditVerification.Status.BROKEN,
        checked=result.checked, last_seq=result.last_seq, bad_seq=result.bad_seq, pending=result.pending,
        problem=(result.problem + ("\n" + "\n".join(f"{k}: {v}" for k, v in result.details.items())
                                   if result.details else ""))[:2000],
        finished_at=timezone.now())
