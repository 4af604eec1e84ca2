"""`manage.py sess ACTION ...`: the session operations the Rust tests ask Django for.
Every action prints one JSON object on stdout.

login USERNAME            sign USERNAME in (created if missing) through django.test.Client,
                          which runs contrib.auth's login(), then store a cart -> {"key", "user_id"}
get KEY                   load the session -> {"found", "data", "expiry_age"}
whoami KEY                the user contrib.auth's get_user() sees -> {"username"} (null: anonymous)
set KEY JSON              load, update with the JSON object, save -> {"ok"}
create JSON [EXPIRY]      a new session with the JSON data (set_expiry(EXPIRY) if given) -> {"key"}
flush KEY                 flush the session -> {"ok"}
cookie VALUE              GET /whoami/ with the session cookie VALUE, through Django's
                          middleware -> {"username", "data", "set_cookie"}
cookie-set VALUE JSON     POST the JSON object to /set/ with the session cookie VALUE
                          -> {"ok", "set_cookie"}
"""
import json

from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.test import Client, RequestFactory
from importlib import import_module


def store(key=None):
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("action")
        parser.add_argument("params", nargs="*")

    def handle(self, *_, **opts):
        out = getattr(self, "do_" + opts["action"].replace("-", "_"))(*opts["params"])
        self.stdout.write(json.dumps(out))

    def do_login(self, username):
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_password("pw")
            user.save()
        client = Client()
        assert client.login(username=username, password="pw")
        key = client.cookies[settings.SESSION_COOKIE_NAME].value
        s = store(key)
        s["cart"] = ["book", "Zoë's pen"]
        s.save()
        return {"key": key, "user_id": user.pk}

    def do_get(self, key):
        s = store(key)
        data = dict(s.items())  # loads; an unknown, expired or corrupt session is {}
        return {
            "found": s.session_key is not None,
            "data": data,
            "expiry_age": s.get_expiry_age(),
        }

    def do_whoami(self, key):
        request = RequestFactory().get("/")
        request.session = store(key)
        user = get_user(request)
        return {"username": user.username if user.is_authenticated else None}

    def do_set(self, key, data):
        s = store(key)
        s.update(json.loads(data))
        s.save()
        return {"ok": True}

    def do_create(self, data, expiry=None):
        s = store()
        s.update(json.loads(data))
        if expiry is not None:
            s.set_expiry(int(expiry))
        s.save()
        return {"key": s.session_key}

    def do_flush(self, key):
        s = store(key)
        s.flush()
        return {"ok": True}

    def _client(self, value):
        client = Client()
        client.cookies[settings.SESSION_COOKIE_NAME] = value
        return client

    def _set_cookie(self, response):
        c = response.cookies.get(settings.SESSION_COOKIE_NAME)
        return c.value if c is not None else None

    def do_cookie(self, value):
        res = self._client(value).get("/whoami/")
        assert res.status_code == 200, res.status_code
        return {**res.json(), "set_cookie": self._set_cookie(res)}

    def do_cookie_set(self, value, data):
        res = self._client(value).post("/set/", data, content_type="application/json")
        assert res.status_code == 200, res.status_code
        return {**res.json(), "set_cookie": self._set_cookie(res)}
