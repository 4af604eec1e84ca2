"""Two views the cookie-level tests call through django.test.Client, so the session
comes from the `sessionid` cookie through Django's SessionMiddleware and
AuthenticationMiddleware, as in a deployed Django.

GET  /whoami/   -> {"username" (null: anonymous), "data"}
POST /set/      body: a JSON object merged into the session -> {"ok"}
"""
import json

from django.http import JsonResponse
from django.urls import path


def whoami(request):
    user = request.user
    return JsonResponse(
        {
            "username": user.username if user.is_authenticated else None,
            "data": dict(request.session.items()),
        }
    )


def set_data(request):
    request.session.update(json.loads(request.body))
    return JsonResponse({"ok": True})


urlpatterns = [path("whoami/", whoami), path("set/", set_data)]
