#!/usr/bin/env python3
"""Create or update the lab's MongoDB users (idempotent).

Reads passwords from the environment (never from argv, which `ps` shows):
MONGODB_ADMIN_PASSWORD, MONGODB_APP_PASSWORD.

  --mode bootstrap   the server runs WITHOUT auth: create both users if missing
  --mode ensure      the server runs WITH auth: log in as admin, create or update users

Prints one JSON line {"changed": bool, "actions": [...]}; exits 2 with a clear message
on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError


def die(msg: str) -> None:
    print(json.dumps({"changed": False, "error": msg}))
    sys.exit(2)


def user_exists(db, name: str) -> bool:
    info = db.command("usersInfo", name)
    return bool(info.get("users"))


def can_login(host: str, port: int, user: str, password: str, source: str) -> bool:
    client = MongoClient(host, port, username=user, password=password, authSource=source,
                         authMechanism="SCRAM-SHA-256", serverSelectionTimeoutMS=5000)
    try:
        client[source].command("ping")
        return True
    except OperationFailure:
        return False
    finally:
        client.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=27017)
    p.add_argument("--mode", choices=["bootstrap", "ensure"], required=True)
    p.add_argument("--admin-user", required=True)
    p.add_argument("--app-user", required=True)
    p.add_argument("--app-database", required=True)
    a = p.parse_args()
    admin_pw = os.environ.get("MONGODB_ADMIN_PASSWORD", "")
    app_pw = os.environ.get("MONGODB_APP_PASSWORD", "")
    if not admin_pw or not app_pw:
        die("MONGODB_ADMIN_PASSWORD and MONGODB_APP_PASSWORD must be set")

    actions: list[str] = []
    try:
        if a.mode == "bootstrap":
            client = MongoClient(a.host, a.port, serverSelectionTimeoutMS=10000)
        else:
            client = MongoClient(a.host, a.port, username=a.admin_user, password=admin_pw,
                                 authSource="admin", authMechanism="SCRAM-SHA-256",
                                 serverSelectionTimeoutMS=10000)
        admin = client["admin"]
        appdb = client[a.app_database]
        wanted = [
            (admin, a.admin_user, admin_pw, [{"role": "root", "db": "admin"}], "admin"),
            (appdb, a.app_user, app_pw, [{"role": "readWrite", "db": a.app_database}],
             a.app_database),
        ]
        for db, name, pw, roles, source in wanted:
            if not user_exists(db, name):
                db.command("createUser", name, pwd=pw, roles=roles,
                           mechanisms=["SCRAM-SHA-256"])
                actions.append(f"created {source}.{name}")
            elif a.mode == "ensure" and not can_login(a.host, a.port, name, pw, source):
                db.command("updateUser", name, pwd=pw, mechanisms=["SCRAM-SHA-256"])
                actions.append(f"password updated for {source}.{name}")
        client.close()
    except OperationFailure as e:
        die(f"MongoDB refused the user setup ({e.code}): {e.details.get('errmsg', e) if e.details else e}")
    except PyMongoError as e:
        die(f"cannot talk to MongoDB at {a.host}:{a.port}: {e}")
    print(json.dumps({"changed": bool(actions), "actions": actions}))


if __name__ == "__main__":
    main()
