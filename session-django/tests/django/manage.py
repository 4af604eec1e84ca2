#!/usr/bin/env python
"""The tiny Django project the interoperability tests drive (see settings.py)."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "interop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
