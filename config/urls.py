from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("labeling.apis.urls")),
    path("api/training/", include("training.apis.urls")),
    path("dashboard/", include("labeling.dashboard_urls")),
    path("", include("labeling.urls")),
    path("training/", include("training.urls")),
]
