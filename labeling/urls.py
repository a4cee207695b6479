from django.contrib.auth import views as auth_views
from django.urls import path

from labeling import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.project_list, name="project-list"),
    path("label/<slug:slug>/", views.label, name="label"),
]
