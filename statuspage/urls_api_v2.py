"""The Statuspage-compatible v2 API and the feeds, served from the snapshot."""

urlpatterns: list = []
