from django.urls import path

from audit import views

urlpatterns = [
    path("audit/", views.audit_list, name="audit-list"),
    path("audit/<int:pk>/", views.audit_detail, name="audit-detail"),
    path("audit/verify/", views.verify_chain, name="audit-verify"),
    path("audit/verify/<int:pk>/", views.verification_status, name="audit-verification"),
]
