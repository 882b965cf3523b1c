"""The audit log's vocabulary: every action name and the payload keys other code reads back.

Entries are immutable, so these strings are a contract with every entry already written: rename a
constant's value and the history no longer matches what the code looks for. Code that writes or
reads entries uses these names, never a string literal of its own.
"""

from __future__ import annotations

# --- fleet ---------------------------------------------------------------------------------------
SCALE = "scale"
FAILOVER = "failover"
SERVICE_CREATE = "service.create"
SERVICE_UPDATE = "service.update"
SERVICE_DELETE = "service.delete"
# --- health --------------------------------------------------------------------------------------
MAINTENANCE_CREATE = "maintenance.create"
MAINTENANCE_END = "maintenance.end"
# --- slo -----------------------------------------------------------------------------------------
INCIDENT_OPEN = "incident.open"
INCIDENT_ACKNOWLEDGE = "incident.acknowledge"
INCIDENT_RESOLVE = "incident.resolve"
INCIDENT_ESCALATE = "incident.escalate"
ALERT_SENT = "alert.sent"
ALERT_FAILED = "alert.failed"
ALERT_CHANNEL_CREATE = "alert_channel.create"
ALERT_CHANNEL_UPDATE = "alert_channel.update"
ALERT_CHANNEL_DELETE = "alert_channel.delete"
# --- autoscaling ---------------------------------------------------------------------------------
AUTOSCALE_OVERRIDE = "autoscale.override"
AUTOSCALE_OVERRIDE_END = "autoscale.override_end"
# --- workflows -----------------------------------------------------------------------------------
WORKFLOW_START = "workflow.start"
WORKFLOW_FINISH = "workflow.finish"
WORKFLOW_CANCEL = "workflow.cancel"
WORKFLOW_RETRY = "workflow.retry"
WORKFLOW_APPROVE = "workflow.approve"
WORKFLOW_LEASE_EXPIRED = "workflow.lease_expired"
FLOW_CREATE = "flow.create"
FLOW_UPDATE = "flow.update"
# --- schedules -----------------------------------------------------------------------------------
SCHEDULE_CREATE = "schedule.create"
SCHEDULE_UPDATE = "schedule.update"
SCHEDULE_PAUSE = "schedule.pause"
SCHEDULE_RESUME = "schedule.resume"
SCHEDULE_DELETE = "schedule.delete"
SCHEDULE_FIRE = "schedule.fire"  # a run started (success) or the owner's start refused (denied)
SCHEDULE_SKIP = "schedule.skip"  # the overlap policy skipped a fire
SCHEDULE_HOLD = "schedule.hold"  # the overlap policy queue holds a fire until the previous run ends
SCHEDULE_MISSED = "schedule.missed"  # instants the missed-fires policy dropped (one entry per claim)
# --- policies ------------------------------------------------------------------------------------
POLICY_CREATE = "policy.create"
POLICY_UPDATE = "policy.update"
POLICY_DELETE = "policy.delete"
# --- accounts ------------------------------------------------------------------------------------
TOKEN_CREATE = "token.create"
TOKEN_REVOKE = "token.revoke"
USER_DISABLE = "user.disable"
USER_PASSWORD_CHANGE = "user.password_change"
AUTH_LOGIN = "auth.login"
AUTH_LOGOUT = "auth.logout"
ACCESS_REFUSED = "access.refused"
# --- audit ---------------------------------------------------------------------------------------
AUDIT_VERIFY = "audit.verify"

# Payload keys read back by code (the service timeline draws the desired-count steps from them).
FROM = "from"
TO = "to"
INSTANCE = "instance"
CAUSE = "cause"

# Entries written before the layout split name a moved model by its old app label; readers of a
# target's history ask for every name it has had.
LEGACY_TARGET_TYPES = {"fleet.service": ("services.service",), "accounts.apitoken": ("hmsmgmt.apitoken",),
                       "slo.alertchannel": ("services.alertchannel",)}


def target_types(target_type: str) -> tuple[str, ...]:
    """A target type and the other names the same model has had (either way round)."""
    for current, old in LEGACY_TARGET_TYPES.items():
        if target_type == current or target_type in old:
            return (current, *old)
    return (target_type,)


SERVICE_TARGET_TYPES = target_types("fleet.service")  # a service's entries, old and new
