from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User


@pytest.fixture
def auditor(db: None) -> User:
    """erin: not a superuser, holds audit.view_auditentry only."""
    user = User.objects.create_user("erin", "erin@example.org", "pw-erin-123")
    user.user_permissions.add(Permission.objects.get(codename="view_auditentry", content_type__app_label="audit"))
    return user
