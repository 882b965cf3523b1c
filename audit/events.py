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
SERVICE_REBALANCE = "service.rebalance"
NODE_DRAIN = "node.drain"
NODE_ACTIVATE = "node.activate"
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
WORKFLOW_REJECT = "workflow.reject"
WORKFLOW_PAUSE = "workflow.pause"
WORKFLOW_RESUME = "workflow.resume"
WORKFLOW_BULK = "workflow.bulk"
WORKFLOW_QUEUED = "workflow.queued"  # a start beyond a "when full: queue" quota: the run waits in line
WORKFLOW_DEQUEUED = "workflow.dequeued"  # a slot freed: the head of the queue started
WORKFLOW_DEADLINE_MISSED = "workflow.deadline_missed"  # a run passed its deadline unfinished
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
TOKEN_UPDATE = "token.update"  # name or an earlier expiry (admin)
USER_DISABLE = "user.disable"
USER_PASSWORD_CHANGE = "user.password_change"
AUTH_LOGIN = "auth.login"
AUTH_LOGOUT = "auth.logout"
ACCESS_REFUSED = "access.refused"
# The refusals of one source, kind and minute after the first (audit.refusals): one entry with the count.
ACCESS_REFUSED_REPEATED = "access.refused_repeated"
# --- audit ---------------------------------------------------------------------------------------
AUDIT_VERIFY = "audit.verify"

# Payload keys read back by code (the service timeline draws the desired-count steps from them).
FROM = "from"
TO = "to"
INSTANCE = "instance"
CAUSE = "cause"
COUNT = "count"  # access.refused_repeated: how many refusals the entry stands for
FIRST_ENTRY = "first_entry"  # access.refused_repeated: id of the entry of the first one
# A retried run names who started it and who set it going again (the steps act as the latter).
STARTED_BY = "startedBy"
RETRIED_BY = "retriedBy"
# A bulk operation's entries name it, so one click's entries can be found together.
BULK = "bulk"

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
