"""/talk: the talk's steps, each one's rehearsal status and its recorded fallback (loopback only).

Reads three things the lab writes (paths from the settings, see config.py):
- ``talk_json``: the validated talk (``demolab-talk json``, Talk.to_dict() of docs/TALK.md);
- ``rehearsal_json``: the rehearsal report, the talk's steps under its ``talk`` key;
- ``casts_dir``: one asciicast v2 recording per step, ``<step-id>.cast``, played in the page
  by the asciinema web player (served from the package's static files).

A cast is looked up by step id only: the id must match the talk file's id rule and the file
must be a regular file directly in ``casts_dir``. Everything from the talk is text: it is
escaped into the page, never parsed as HTML.
"""

from __future__ import annotations

import json
import os
import re
import string
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import FileResponse, Response

from .access import local_only
from .config import Settings

STEP_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # the talk file's id rule (demolab_talk.model)
CAST_NAME_RE = re.compile(r"^([a-z0-9][a-z0-9-]*)\.cast$")
STATUSES = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self' ws: wss:"
)  # the asciinema player runs its terminal emulator as WebAssembly


@dataclass
class TalkPage:
    """What /talk shows: the talk (or why there is none) and the rehearsal of each step."""

    title: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""
    rehearsal: dict[str, Any] = field(default_factory=dict)
    rehearsal_problem: str = ""


def read_json(path: str, what: str, fix: str) -> tuple[Any, str]:
    """(document, "") or (None, one-line problem saying what to do)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle), ""
    except FileNotFoundError:
        return None, f"No {what} at {path}: {fix}."
    except PermissionError:
        return None, f"{path} is not readable by the demo app: rerun the playbook (make lab)."
    except (OSError, ValueError) as exc:
        return None, f"{path} cannot be read ({exc}): {fix}."


def load_page(settings: Settings) -> TalkPage:
    page = TalkPage()
    talk, page.problem = read_json(
        settings.talk_json, "talk", "make lab installs the talk (talk/talk.yml)"
    )
    if talk is not None:
        if not isinstance(talk, dict) or not isinstance(talk.get("steps"), list):
            page.problem = f"{settings.talk_json} is not a talk (no list of steps): run make lab."
        else:
            page.title = str(talk.get("title") or "")
            page.steps = [s for s in talk["steps"] if isinstance(s, dict) and "id" in s]
    report, problem = read_json(settings.rehearsal_json, "rehearsal report", "run make rehearse")
    if isinstance(report, dict) and isinstance(report.get("talk"), dict):
        page.rehearsal = report["talk"]
    elif report is not None:
        page.rehearsal_problem = "The last rehearsal did not run the talk's steps: make rehearse."
    else:
        page.rehearsal_problem = problem
    return page


def cast_file(settings: Settings, step_id: str) -> Path | None:
    """The recording of one step, or None: by step id only, never a path from the client."""
    if not STEP_ID_RE.match(step_id):
        return None
    path = Path(settings.casts_dir) / f"{step_id}.cast"
    try:
        if path.is_file() and os.access(path, os.R_OK):
            return path
    except OSError:
        return None
    return None


def _text(value: Any) -> str:
    return escape(str(value if value is not None else ""))


def render_step(settings: Settings, index: int, total: int, step: dict[str, Any],
                result: dict[str, Any] | None) -> str:  # fmt: skip
    step_id = str(step["id"])
    valid = bool(STEP_ID_RE.match(step_id))
    status = str((result or {}).get("status") or "")
    label = STATUSES.get(status, "NOT REHEARSED")
    css = status if status in STATUSES else "none"
    parts = [
        f'<section class="step status-{css}" id="step-{_text(step_id)}" '
        f'data-step="{_text(step_id)}" data-status="{_text(status or "none")}">',
        '<header class="step-head">',
        f'<span class="step-n">{index}/{total}</span>',
        f'<h2 class="step-title">{_text(step.get("title") or step_id)}</h2>',
        f'<span class="badge badge-{css}">{label}</span>',
    ]
    if step.get("risky"):
        parts.append('<span class="badge badge-risky">risky</span>')
    hotkey = step.get("hotkey")
    if isinstance(hotkey, dict) and hotkey.get("name"):
        parts.append(f'<span class="hotkey">hotkey <kbd>{_text(hotkey["name"])}</kbd></span>')
    cast = cast_file(settings, step_id) if valid else None
    if cast is not None:
        parts.append(
            f'<button type="button" class="fallback" data-cast="/talk/cast/{_text(step_id)}.cast"'
            f' aria-controls="player-{_text(step_id)}">&#9654; Play fallback</button>'
        )
    else:
        parts.append('<span class="no-cast">no recording</span>')
    parts.append("</header>")
    reason = (result or {}).get("reason")
    if reason:
        parts.append(f'<p class="reason">{_text(reason)}</p>')
    misses = (result or {}).get("misses") or []
    if isinstance(misses, list) and misses:
        items = "".join(
            f"<li>{_text(m.get('kind'))}: {_text(m.get('what'))}"
            f" &rarr; {_text(m.get('fix'))}</li>"
            for m in misses if isinstance(m, dict)
        )  # fmt: skip
        parts.append(f'<ul class="misses">{items}</ul>')
    if step.get("command"):
        parts.append(f'<pre class="command"><code>$ {_text(step["command"])}</code></pre>')
    target = str(step.get("open") or "")
    if target:
        if target.startswith(("http://", "https://")):
            parts.append(f'<p class="open">open <a href="{_text(target)}" rel="noreferrer">'
                         f"{_text(target)}</a></p>")  # fmt: skip
        else:
            parts.append(f'<p class="open">open {_text(target)}</p>')
    if step.get("notes"):
        parts.append(f'<div class="notes">{_text(step["notes"]).strip()}</div>')
    parts.append(f'<div class="player" id="player-{_text(step_id)}"></div>')
    parts.append("</section>")
    return "\n".join(parts)


def render(settings: Settings, page: TalkPage) -> str:
    results = {}
    for item in page.rehearsal.get("steps") or []:
        if isinstance(item, dict) and "id" in item:
            results[str(item["id"])] = item
    if page.problem:
        body = f'<p class="problem" role="alert">{_text(page.problem)}</p>'
    else:
        total = len(page.steps)
        body = "\n".join(
            render_step(settings, n, total, step, results.get(str(step["id"])))
            for n, step in enumerate(page.steps, 1)
        )
    if page.rehearsal:
        r = page.rehearsal
        summary = (
            f"Last rehearsal {_text(r.get('started') or '')}: "
            f"{_text(r.get('passed', 0))} passed, {_text(r.get('failed', 0))} failed"
            + (f", {_text(r.get('seconds'))} s" if r.get("seconds") is not None else "")
        )
    else:
        summary = _text(page.rehearsal_problem)
    template = resources.files("demolab_app").joinpath("templates/talk.html").read_text()
    return string.Template(template).substitute(
        title=_text(page.title or "the talk"), summary=summary, steps=body
    )


@local_only
def talk_view(request: Request) -> Response:
    settings: Settings = request.registry.demolab_services.settings
    response = Response(render(settings, load_page(settings)), content_type="text/html",
                        charset="utf-8")  # fmt: skip
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.cache_control = "no-store"
    return response


@local_only
def cast_view(request: Request) -> Response:
    settings: Settings = request.registry.demolab_services.settings
    match = CAST_NAME_RE.match(request.matchdict["name"])
    if match is None:
        return Response(
            "400 Bad Request: a recording is named by its step id (letters, digits, dashes)\n",
            status=400, content_type="text/plain", charset="utf-8",
        )  # fmt: skip
    path = cast_file(settings, match.group(1))
    if path is None:
        return Response(
            f"404 Not Found: no recording for step {match.group(1)}: run make rehearse\n",
            status=404, content_type="text/plain", charset="utf-8",
        )  # fmt: skip
    response = FileResponse(str(path), request=request, content_type="application/x-asciicast")
    response.cache_control = "no-cache"  # the next rehearsal rewrites it
    return response


def add_views(config: Configurator) -> None:
    config.add_route("talk", "/talk")
    config.add_route("talk_cast", "/talk/cast/{name}")
    config.add_view(talk_view, route_name="talk", request_method="GET")
    config.add_view(cast_view, route_name="talk_cast", request_method=("GET", "HEAD"))
