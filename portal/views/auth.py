"""Signing in and out with a password (the first factor); the second factor follows in portal.views.mfa."""

from django.contrib.auth import views as auth_views
from django.urls import reverse_lazy

from portal.forms import LoginForm


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("portal:login")
