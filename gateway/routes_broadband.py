"""Platform routes of broadband stop, resume, teardown and emergency resume (R8-R12)."""

from __future__ import annotations

from gateway.api import Api

api = Api()
