from ninja import NinjaAPI

api = NinjaAPI(title="Signalpost staff API", version="1", urls_namespace="api-v1")
