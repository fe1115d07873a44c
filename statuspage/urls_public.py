"""Public pages (statuspage/views.py), served from the snapshot."""

urlpatterns: list = []
