"""Settings driven by environment variables, so one Rust test can point Django at the
same store (and the same SECRET_KEY) as the Rust side.

DJANGO_SECRET_KEY            SECRET_KEY (required)
DJANGO_SECRET_KEY_FALLBACKS  SECRET_KEY_FALLBACKS, comma-separated (optional)
DJANGO_DB_URL                sqlite:///ABSOLUTE/PATH, postgres://USER@HOST:PORT/DB or
                             mysql://USER@HOST:PORT/DB (MySQL/MariaDB through PyMySQL)
DJANGO_SESSION_ENGINE        db | cache | cached_db | file (Django's engines)
DJANGO_SESSION_FILE_PATH     SESSION_FILE_PATH (file engine)
DJANGO_REDIS_URL             the Redis cache LOCATION (cache and cached_db engines)
DJANGO_CACHE_KEY_PREFIX      the cache KEY_PREFIX (optional)
"""
import os
from urllib.parse import urlparse

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
SECRET_KEY_FALLBACKS = [k for k in os.environ.get("DJANGO_SECRET_KEY_FALLBACKS", "").split(",") if k]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "interop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "interop.urls"
# Fast hashing: the tests log users in many times.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

_db = urlparse(os.environ["DJANGO_DB_URL"])
if _db.scheme == "sqlite":
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _db.path}}
elif _db.scheme in ("postgres", "postgresql"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _db.path.lstrip("/"),
            "USER": _db.username or "",
            "PASSWORD": _db.password or "",
            "HOST": _db.hostname or "",
            "PORT": str(_db.port or ""),
        }
    }
elif _db.scheme in ("mysql", "mariadb"):
    # PyMySQL stands in for mysqlclient (no C build); Django checks the mysqlclient
    # version it reports, so it reports the one Django 5.2 needs.
    import pymysql

    pymysql.version_info = (2, 2, 1, "final", 0)
    pymysql.install_as_MySQLdb()
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": _db.path.lstrip("/"),
            "USER": _db.username or "",
            "PASSWORD": _db.password or "",
            "HOST": _db.hostname or "",
            "PORT": str(_db.port or ""),
        }
    }
else:
    raise RuntimeError(f"DJANGO_DB_URL: unsupported scheme {_db.scheme!r}")

SESSION_ENGINE = "django.contrib.sessions.backends." + os.environ.get("DJANGO_SESSION_ENGINE", "db")
if "DJANGO_SESSION_FILE_PATH" in os.environ:
    SESSION_FILE_PATH = os.environ["DJANGO_SESSION_FILE_PATH"]
if "DJANGO_REDIS_URL" in os.environ:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["DJANGO_REDIS_URL"],
            "KEY_PREFIX": os.environ.get("DJANGO_CACHE_KEY_PREFIX", ""),
        }
    }
