from django.apps import AppConfig


class StatuspageConfig(AppConfig):
    name = "statuspage"
    verbose_name = "Public status page"

    def ready(self) -> None:
        from incidents.publishing import snapshot_published
        from statuspage import export

        snapshot_published.connect(export.on_published, dispatch_uid="statuspage.export")
