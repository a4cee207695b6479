from django.urls import path

from labeling import views_dashboard

urlpatterns = [
    path("<slug:slug>/", views_dashboard.project_dashboard, name="dashboard-project"),
]
