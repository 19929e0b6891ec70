"""Rehearse the talk: every step, in order, offline, in a shell like the presenter's.

    python3 -m demolab_talk rehearse [--talk FILE] [--user NAME] [--home DIR] [--proxy URL]
                                     [--demo URL] [--miss-log FILE] [--misses FILE] [--out FILE]

demolab-rehearse runs this after its own checks (pip, apt, pages, the demo), with the misses
those found (--misses: the talk's needs were part of them), so each miss is named under the
step that needs it. On its own it rehearses only the steps.

For each step:
  * its command runs in an interactive bash of the presenter (their ~/.bashrc, so the
    demolab block's environment and aliases are the real ones), in a scratch directory that
    stands for the talk's workdir (fresh each rehearsal; `cd` and exported variables carry
    over from one step to the next, as in the presenter's terminal and as lab-play runs
    them: one mechanism for both, shell.py), stdin empty, under the
    step's timeout (then the whole session is killed); the terminal session is recorded with
    Debian's asciinema as an asciicast v2 file (paths.cast_path, 0644), the exit code comes
    from a trap in the step's script; `expect` is checked: exit code, the output pattern on
    the ANSI-stripped output, the URL's status;
  * with a display ($DISPLAY and lab-record), a screen clip of the step (paths.clip_path);
  * its snippets are checked: every URL in the hotkey's snippet and run, the yasnippets and
    `open` answers (lab-local URLs directly, others through the lab's proxy, which only
    replays), a root-relative src/href in a snippet answers on the demo app, a filesystem
    path exists, the program of each shell line of `run` (and of a snippet that is shell)
    is in the presenter's PATH;
  * what it caused to miss: its needs that demolab-rehearse found missing, requests the
    proxy could not replay while its command ran, pip's "No matching distribution" and apt's
    "Unable to locate package" in its output.
The talk's `requires` (env, aliases, commands) are checked in the presenter's shell first.

Report: one line per step, PASS/FAIL (SKIP: notes only) with the reason and its misses;
--out writes the JSON of docs/TALK.md ("talk" key of rehearsal.json). Exit 0 all passed,
1 a step or a requirement failed, 2 cannot rehearse (no talk, no asciinema, bad user).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .model import Step, Talk, TalkError, load
from .shell import ShellState, parse_env0

ASCIINEMA = "/usr/bin/asciinema"
COLS, ROWS = 100, 30
# The presenter_kit role's shell settings, sourced from a marked block in ~/.bashrc.
PRESENTER_SHELL = ".config/demolab/presenter.sh"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
CLIP_SECONDS_MIN = 1.0

PIP_FIX = "add it to mirror/requirements.in, run mirror/lock.py, then `make online`"
APT_FIX = "add it to mirror/apt-packages.txt, then `make online`"
URL_FIX = "`make online`, open it once through the proxy (or list it in mirror/urls.txt), then rehearse again"

ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
URL_IN_TEXT = re.compile(r"https?://[^\s\"'<>`)\]}|\\]+")
HTML_REF = re.compile(r"""\b(?:src|href|action)\s*=\s*["'](/(?!/)[^"'\s]*)["']""")
FS_PATH = re.compile(r"""(?:^|(?<=[\s"'=(]))(~/[\w.@%+-][\w./@%+-]*|/(?:opt|etc|var|usr|srv|home|root)/[\w./@%+-]+)""")
# bash's notice when a job dies of the timeout's signal ("Hangup", "bash: line 3:  42 Killed  sleep 9").
KILL_NOTICE = re.compile(r"^(?:.*\b\d+\s+)?(?:Hangup|Killed|Terminated)\b")
PIP_MISS = re.compile(r"No matching distribution found for (\S+)")
APT_MISS = re.compile(r"Unable to locate package (\S+)|Package '?([\w.+-]+)'? has no installation candidate")
NOT_FOUND = re.compile(r"(?:bash: )?(?:line \d+: )?([^\s:]+): command not found")
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "|&", ";;", "then", "do", "else", "elif", "{", "}", "!", "time",
              "done", "fi", "esac"}
WRAPPERS = {"sudo", "env", "exec", "nohup", "command", "builtin", "nice", "timeout"}
# A line that installs something: the programs of the lines after it may be what it installs.
INSTALLS = re.compile(r"\b(?:pip3?|apt-get|apt|npm|gem|cargo|pipx)\s+(?:-\S+\s+)*install\b")
COMPOUND = {"for", "case", "select", "function", "while", "until", "if", "[[", "[", "test"}


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


# -- what the text of a snippet or a command refers to ---------------------------------------
def urls_in(text: str) -> list[str]:
    out = []
    for m in URL_IN_TEXT.finditer(text):
        url = m.group(0).rstrip(".,;:!?'\"")
        # A URL with shell or snippet placeholders in it is not one we can ask for.
        if any(c in url for c in "${}*") or url in out:
            continue
        out.append(url)
    return out


def html_refs(text: str) -> list[str]:
    return [m.group(1) for m in HTML_REF.finditer(text) if not any(c in m.group(1) for c in "${}")]


def fs_paths(text: str) -> list[str]:
    text = URL_IN_TEXT.sub(" ", text)
    out = []
    for m in FS_PATH.finditer(text):
        p = m.group(1).rstrip(".,;:)")
        if any(c in p for c in "*?[]{}$") or p in out:
            continue
        out.append(p)
    return out


def programs_in(text: str) -> list[list[str]]:
    """The program of each simple command of each shell line, one list per line (in order).
    Conservative: a line that does not tokenise (an open quote) or that installs something
    (pip install, apt-get install ...) ends the scan; here-documents, variables, relative
    paths and compound commands are left alone."""
    lines: list[list[str]] = []
    logical = ""
    heredoc: str | None = None
    for raw in text.splitlines():
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        if raw.rstrip().endswith("\\"):
            logical += raw.rstrip()[:-1] + " "
            continue
        line = (logical + raw).strip()
        logical = ""
        if not line or line.startswith("#"):
            continue
        doc = re.search(r"<<-?\s*['\"]?(\w+)", line)
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            tokens = list(lexer)
        except ValueError:
            break
        words: list[str] = []
        at_start = True
        skip_segment = False
        for tok in tokens:
            if tok in SEPARATORS or set(tok) <= set(";&|()"):
                at_start, skip_segment = True, False
                continue
            if not at_start or skip_segment:
                continue
            if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tok) or tok in WRAPPERS or tok.startswith("-"):
                continue  # VAR=value cmd, sudo cmd, timeout 5 cmd (its options)
            if tok.isdigit():
                continue
            at_start = False
            if tok in COMPOUND:
                skip_segment = True
                continue
            if "$" in tok or "`" in tok or tok.startswith(("./", "../", "~")) or "=" in tok:
                continue
            if "/" in tok and not tok.startswith("/"):
                continue
            words.append(tok)
        if words:
            lines.append(words)
        if INSTALLS.search(line):
            break
        if doc:
            heredoc = doc.group(1)
    return lines


def is_local(url: str, local_hosts: set[str]) -> bool:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return host in local_hosts or host.endswith(".localhost")


# -- the presenter ----------------------------------------------------------------------------
@dataclass
class Presenter:
    user: str
    uid: int
    gid: int
    home: Path

    @property
    def env(self) -> dict[str, str]:
        env = {"HOME": str(self.home), "USER": self.user, "LOGNAME": self.user, "SHELL": "/bin/bash",
               "PATH": SYSTEM_PATH if self.uid == 0 else USER_PATH, "TERM": "xterm-256color",
               "LANG": os.environ.get("LANG", "C.UTF-8"), "COLUMNS": str(COLS), "LINES": str(ROWS)}
        for key in ("DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR", "PULSE_SERVER"):
            if os.environ.get(key):
                env[key] = os.environ[key]
        return env

    def argv(self, *cmd: str) -> list[str]:
        """cmd as the presenter, with the presenter's login environment only."""
        env = [f"{k}={v}" for k, v in self.env.items()]
        if os.geteuid() == self.uid:
            return ["env", "-i", *env, *cmd]
        return ["runuser", "-u", self.user, "--", "env", "-i", *env, *cmd]


def find_presenter(user: str | None, home: str | None) -> Presenter:
    """--user, else the account whose home has the presenter_kit's shell settings (a desktop
    user before root), else whoever runs this."""
    if user is None:
        found = [p for p in pwd.getpwall() if (Path(p.pw_dir) / PRESENTER_SHELL).is_file()]
        found.sort(key=lambda p: (p.pw_uid == 0, p.pw_uid))
        user = found[0].pw_name if found else pwd.getpwuid(os.geteuid()).pw_name
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SystemExit(f"demolab-talk rehearse: no user {user!r} on this machine (--user)") from None
    return Presenter(user=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid,
                     home=Path(home) if home else Path(entry.pw_dir))


# -- one step in the presenter's shell, recorded --------------------------------------------
@dataclass
class Run:
    exit: int | None
    output: str
    seconds: float
    timed_out: bool
    cast_ok: bool
    problem: str = ""


def session_of(pid: int | str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[3]) if len(fields) > 3 else None


def sessions_of(sid: int) -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and session_of(e.name) == sid]


def kill_session(sid: int, grace: float = 1.0) -> None:
    """Every process of the step's terminal session (hang up, as a closed terminal does; with
    job control each pipeline has its own process group, so kill by session)."""
    for sig in (signal.SIGHUP, signal.SIGKILL):
        pids = sessions_of(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and sessions_of(sid):
            time.sleep(0.05)


class Shell:
    """The presenter's shell for the whole rehearsal: scratch directory, state between steps."""

    def __init__(self, presenter: Presenter, scratch: Path, workdir: str) -> None:
        self.presenter = presenter
        self.scratch = scratch
        self.state = scratch / ".demolab-rehearsal"
        self.state.mkdir(mode=0o700)
        self.workspace = scratch / "work"
        self.workspace.mkdir()
        for p in (self.state, self.workspace, scratch):
            os.chown(p, presenter.uid, presenter.gid)
        self.workdir = workdir
        self.baseline: dict[str, str] = {}
        # Where the next step starts and what it inherits (shared with lab-play: shell.py).
        self.steps = ShellState(self.state, str(self.workspace))

    def expand_workdir(self, path: str) -> str:
        """A path under the talk's workdir stands for the same path in the scratch directory."""
        home = str(self.presenter.home)
        full = os.path.normpath(path.replace("~", home, 1) if path.startswith("~") else path)
        wd = os.path.normpath(self.workdir.replace("~", home, 1) if self.workdir.startswith("~") else self.workdir)
        if full == wd or full.startswith(wd + "/"):
            return str(self.workspace) + full[len(wd):]
        return full

    def probe(self, names: list[str], aliases: list[str]) -> tuple[dict[str, str], dict[str, str], set[str]]:
        """The presenter's shell as it starts: its environment, what each name is (`type -t`),
        which aliases exist."""
        script = self.state / "probe.sh"
        out = self.state / "probe.out"
        env_file = self.state / "probe.env"
        lines = [f"env -0 > {shlex.quote(str(env_file))}", f"exec > {shlex.quote(str(out))}"]
        for n in names:
            lines.append(f"printf 'type\\t%s\\t%s\\n' {shlex.quote(n)} \"$(type -t {shlex.quote(n)})\"")
        for a in aliases:
            lines.append(f"alias {shlex.quote(a)} >/dev/null 2>&1 && printf 'alias\\t%s\\n' {shlex.quote(a)}")
        self._write(script, "\n".join([*lines, "exit 0"]) + "\n")
        done = subprocess.run(self.presenter.argv("/bin/bash", "-i", str(script)), cwd=self.steps.base,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"demolab-talk rehearse: the presenter's shell ({self.presenter.user}, "
                             f"{self.presenter.home}/.bashrc) did not start: {done.stderr.strip()[-300:]}")
        self.baseline = parse_env0(env_file.read_bytes())
        types, have_aliases = {}, set()
        for line in out.read_text().splitlines():
            parts = line.split("\t")
            if parts[0] == "type" and len(parts) == 3:
                types[parts[1]] = parts[2]
            elif parts[0] == "alias" and len(parts) == 2:
                have_aliases.add(parts[1])
        return self.baseline, types, have_aliases

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        os.chown(path, self.presenter.uid, self.presenter.gid)

    def run(self, step: Step, cast: Path) -> Run:
        """The step's command under asciinema, as the presenter typed it; the cast goes to cast."""
        assert step.command is not None
        script = self.state / f"step-{step.id}.sh"
        self._write(script, self.steps.script(step.command, stdin_null=True))
        tmp_cast = self.state / f"{step.id}.cast"
        tmp_cast.unlink(missing_ok=True)
        argv = self.presenter.argv(ASCIINEMA, "rec", "--overwrite", "-q", "--cols", str(COLS), "--rows",
                                   str(ROWS), "-t", step.title, "-c", shlex.join(self.steps.argv(script)),
                                   str(tmp_cast))
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=self.steps.base, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=step.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                sid = session_of(int(self.steps.pid_file.read_text().strip()))
            except (OSError, ValueError):
                sid = None
            if sid is not None and sid != os.getsid(0):
                kill_session(sid)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        seconds = time.monotonic() - started
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        rc = self.steps.update()
        if timed_out:
            rc = None
        try:
            output = cast_output(tmp_cast)
            cast.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(cast.parent, 0o755)
            shutil.copyfile(tmp_cast, cast)
            os.chmod(cast, 0o644)
            return Run(rc, output, seconds, timed_out, True)
        except (OSError, ValueError) as exc:
            problem = f"asciinema did not record the step ({exc}; {err.strip()[-200:]})"
            return Run(rc, "", seconds, timed_out, False, problem)


def read_cast(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    """An asciicast v2 file: the header and its events; ValueError when it is not one."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{path} is empty")
    header = json.loads(lines[0])
    if not isinstance(header, dict) or header.get("version") != 2 or "width" not in header:
        raise ValueError(f"{path} is not asciicast v2: {lines[0][:80]}")
    events = []
    for line in lines[1:]:
        if line.strip():
            ev = json.loads(line)
            if not (isinstance(ev, list) and len(ev) == 3 and isinstance(ev[0], (int, float))):
                raise ValueError(f"{path}: not an asciicast v2 event: {line[:80]}")
            events.append(ev)
    return header, events


def cast_output(path: Path) -> str:
    _, events = read_cast(path)
    return strip_ansi("".join(ev[2] for ev in events if ev[1] == "o"))


# -- URLs -----------------------------------------------------------------------------------
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Web:
    """Asks for URLs as the talk would: lab-local directly, the rest through the lab's proxy."""

    def __init__(self, proxy: str, local_hosts: set[str]) -> None:
        for name in ("no_proxy", "NO_PROXY"):
            os.environ.pop(name, None)
        ctx = ssl.create_default_context(cafile="/etc/ssl/certs/ca-certificates.crt") \
            if Path("/etc/ssl/certs/ca-certificates.crt").exists() else ssl.create_default_context()
        https = urllib.request.HTTPSHandler(context=ctx)
        self.direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)
        self.direct_exact = urllib.request.build_opener(urllib.request.ProxyHandler({}), https, NoRedirect)
        self.proxied = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}),
                                                   https)
        self.proxied_exact = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": proxy, "https": proxy}), https, NoRedirect)
        self.local_hosts = local_hosts
        self.cache: dict[tuple[str, bool], tuple[int | None, str]] = {}

    def status(self, url: str, *, exact: bool = False) -> tuple[int | None, str]:
        """(HTTP status, or None and why it did not answer)."""
        key = (url, exact)
        if key in self.cache:
            return self.cache[key]
        local = is_local(url, self.local_hosts)
        web = (self.direct_exact if exact else self.direct) if local else \
            (self.proxied_exact if exact else self.proxied)
        try:
            with web.open(url, timeout=20) as resp:
                while resp.read(1 << 20):
                    pass
                got: tuple[int | None, str] = (resp.status, "")
        except urllib.error.HTTPError as exc:
            got = (exc.code, "")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            got = (None, f"{'no answer' if local else 'the proxy did not answer'}: {reason}")
        self.cache[key] = got
        return got


# -- the rehearsal ----------------------------------------------------------------------------
@dataclass
class Result:
    step: Step
    status: str = "pass"
    problems: list[str] = field(default_factory=list)
    misses: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    cast: str | None = None
    clip: str | None = None
    exit: int | None = None

    def fail(self, why: str) -> None:
        self.status = "fail"
        if why not in self.problems:
            self.problems.append(why)

    def miss(self, kind: str, what: str, fix: str) -> None:
        if not any(m["kind"] == kind and m["what"] == what for m in self.misses):
            self.misses.append({"kind": kind, "what": what, "fix": fix})

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.step.id, "title": self.step.title, "status": self.status,
                "reason": self.reason(), "seconds": round(self.seconds, 2), "cast": self.cast,
                "clip": self.clip, "exit": self.exit, "misses": self.misses}

    def reason(self) -> str:
        if self.status == "skip":
            return "notes only: nothing to run or check"
        if self.problems:
            return "; ".join(self.problems)
        done = []
        if self.step.command is not None:
            done.append(f"exit {self.exit}" + (", output matched" if self.step.expect and self.step.expect.output
                                               else ""))
        if self.step.expect and self.step.expect.url:
            done.append(f"{self.step.expect.url} answered {self.step.expect.status}")
        return ", ".join(done) or "snippets checked"


def miss_log_size(log: Path | None) -> int:
    try:
        return log.stat().st_size if log else 0
    except OSError:
        return 0


def proxy_misses_since(log: Path | None, offset: int) -> list[str]:
    if log is None:
        return []
    try:
        with log.open(encoding="utf-8") as fh:
            fh.seek(offset)
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            url = json.loads(line).get("url", "")
        except ValueError:
            continue
        url = re.sub(r"^(https://[^/:]+):443(/|$)|^(http://[^/:]+):80(/|$)", r"\1\3\2\4", url)
        if url and url not in out:
            out.append(url)
    return out


class Rehearsal:
    def __init__(self, talk: Talk, presenter: Presenter, *, proxy: str, demo: str, miss_log: Path | None,
                 earlier_misses: list[dict[str, str]], clips: bool) -> None:
        self.talk = talk
        self.presenter = presenter
        self.proxy = proxy
        self.demo = demo.rstrip("/")
        self.miss_log = miss_log
        self.earlier = earlier_misses
        self.clips = clips
        self.results: list[Result] = []
        self.requires: list[str] = []
        self.types: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.web = Web(proxy, set())

    # what every step's snippets mention, asked of the presenter's shell at once
    def _snippet_programs(self, step: Step) -> list[str]:
        words: list[str] = []
        if step.hotkey and step.hotkey.run:
            words += [w for line in programs_in(step.hotkey.run) for w in line]
        if step.hotkey and step.hotkey.snippet:
            lines = programs_in(step.hotkey.snippet)
            # A snippet is checked as shell only when its first program is one (HTML, Python
            # and other code are not shell).
            if lines and self.types.get(lines[0][0]):
                words += [w for line in lines for w in line]
        return list(dict.fromkeys(words))

    def start(self, shell: Shell) -> None:
        names: list[str] = list(self.talk.requires.commands)
        for s in self.talk.steps:
            for text in (s.hotkey.run if s.hotkey else None, s.hotkey.snippet if s.hotkey else None):
                if text:
                    names += [w for line in programs_in(text) for w in line]
        names = list(dict.fromkeys(n for n in names if not n.startswith("/")))
        self.env, self.types, aliases = shell.probe(names, self.talk.requires.aliases)
        for var in self.talk.requires.env:
            if not self.env.get(var):
                self.requires.append(f"env {var} is not set in {self.presenter.user}'s shell")
        for alias in self.talk.requires.aliases:
            if alias not in aliases:
                self.requires.append(f"alias {alias} is not defined in {self.presenter.user}'s shell")
        for cmd in self.talk.requires.commands:
            if not self.types.get(cmd):
                self.requires.append(f"command {cmd} is not in {self.presenter.user}'s PATH")

    def program_exists(self, word: str) -> bool:
        if word.startswith("/"):
            return os.access(word, os.X_OK)
        return bool(self.types.get(word))

    def check_url(self, res: Result, url: str, what: str) -> None:
        status, why = self.web.status(url)
        if status is not None and status < 400:
            return
        local = is_local(url, self.web.local_hosts)
        if status == 504 and not local:
            res.miss("url", url, URL_FIX)
            res.fail(f"{what} {url} is not recorded (the proxy answered 504)")
        elif status is None:
            res.fail(f"{what} {url}: {why}")
        else:
            res.fail(f"{what} {url} answered {status}")

    def check_snippets(self, res: Result, shell: Shell) -> None:
        st = res.step
        texts: list[tuple[str, str]] = []
        if st.hotkey and st.hotkey.snippet:
            texts.append((f"hotkey {st.hotkey.name} snippet:", st.hotkey.snippet))
        if st.hotkey and st.hotkey.run:
            texts.append((f"hotkey {st.hotkey.name} run:", st.hotkey.run))
        for y in st.yasnippets:
            texts.append((f"yasnippet {y.mode}/{y.key}:", y.body))
        for what, text in texts:
            for url in urls_in(text):
                self.check_url(res, url, what)
            for ref in html_refs(text):
                self.check_url(res, self.demo + ref, f"{what} {ref} on the demo app:")
            for p in fs_paths(text):
                if not os.path.exists(shell.expand_workdir(p)):
                    res.fail(f"{what} path {p} does not exist")
        for word in self._snippet_programs(st):
            if not self.program_exists(word):
                res.fail(f"hotkey {st.hotkey.name if st.hotkey else ''}: program {word} is not in "
                         f"{self.presenter.user}'s PATH")
        if st.open:
            self.check_url(res, st.open, "open")
        for url in st.needs.urls:
            self.check_url(res, url, "needs url")

    def attribute_needs(self, res: Result) -> None:
        """What demolab-rehearse's pip/apt/pages checks missed that this step needs."""
        st = res.step
        mine = {("pip", x) for x in st.needs.pip} | {("apt", x) for x in st.needs.apt} | \
            {("url", x) for x in st.needs.urls}
        for m in self.earlier:
            if (m.get("kind"), m.get("what")) in mine:
                res.miss(m["kind"], m["what"], m.get("fix", ""))
                res.fail(f"needs {m['kind']} {m['what']}, which the lab's mirrors do not have")

    def run_command(self, res: Result, shell: Shell) -> None:
        st = res.step
        assert st.command is not None and st.expect is not None
        cast = paths.cast_path(st.id)
        clip = paths.clip_path(st.id) if self.clips else None
        offset = miss_log_size(self.miss_log)
        recording = self.clip_start(clip) if clip else False
        run = shell.run(st, cast)
        if recording and clip:
            res.clip = self.clip_stop(clip, run.seconds)
        res.exit = run.exit
        if run.cast_ok:
            res.cast = str(cast)
        else:
            res.fail(run.problem)
        for url in proxy_misses_since(self.miss_log, offset):
            res.miss("url", url, URL_FIX)
            res.fail(f"its command asked for {url}, which the proxy has not recorded")
        for m in PIP_MISS.finditer(run.output):
            res.miss("pip", m.group(1), PIP_FIX)
            res.fail(f"pip: {m.group(1)} is not in the lab index")
        for m in APT_MISS.finditer(run.output):
            pkg = m.group(1) or m.group(2)
            res.miss("apt", pkg, APT_FIX)
            res.fail(f"apt: {pkg} is not in the lab mirror")
        lines = [ln.strip() for ln in run.output.splitlines() if ln.strip()]
        if run.timed_out:
            # What the step printed, not the shell's notice of the kill that ended it.
            lines = [ln for ln in lines if not KILL_NOTICE.search(ln)]
        last = lines[-1] if lines else ""
        if run.timed_out:
            res.fail(f"timed out after {st.timeout} s" + (f" (last output: {last[:120]})" if last else ""))
        elif run.exit is None:
            res.fail("the command's shell ended without an exit code (killed?)")
        elif run.exit != st.expect.exit:
            missing = NOT_FOUND.search(run.output) if run.exit == 127 else None
            detail = f"{missing.group(1)}: command not found in {self.presenter.user}'s shell" if missing \
                else (f"last output: {last[:160]}" if last else "no output")
            res.fail(f"exited {run.exit} (expected {st.expect.exit}): {detail}")
        elif st.expect.output is not None and not re.search(st.expect.output, run.output, re.MULTILINE):
            res.fail(f"output does not match /{st.expect.output}/" + (f" (last line: {last[:120]})" if last else ""))

    def clip_start(self, clip: Path) -> bool:
        clip.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(clip.parent, 0o755)
        clip.unlink(missing_ok=True)
        done = subprocess.run(["lab-record", "start", "--audio", "none", "--out", str(clip)],
                              capture_output=True, text=True, timeout=30, check=False)
        return done.returncode == 0

    def clip_stop(self, clip: Path, seconds: float) -> str | None:
        if seconds < CLIP_SECONDS_MIN:
            time.sleep(CLIP_SECONDS_MIN - seconds)  # a clip needs a few frames
        subprocess.run(["lab-record", "stop"], capture_output=True, text=True, timeout=60, check=False)
        if clip.is_file() and clip.stat().st_size > 0:
            os.chmod(clip, 0o644)
            return str(clip)
        return None

    def check_expect_url(self, res: Result) -> None:
        ex = res.step.expect
        if ex is None or ex.url is None:
            return
        status, why = self.web.status(ex.url, exact=True)
        if status != ex.status:
            if status == 504 and not is_local(ex.url, self.web.local_hosts):
                res.miss("url", ex.url, URL_FIX)
            got = f"answered {status}" if status is not None else why
            res.fail(f"expect url {ex.url} {got} (expected {ex.status})")

    def run(self, out: Any = sys.stdout) -> dict[str, Any]:
        started_wall = time.time()
        t0 = time.monotonic()
        local = {"127.0.0.1", "localhost", "::1", "[::1]"}
        scratch = Path(tempfile.mkdtemp(prefix="demolab-talk-"))
        os.chmod(scratch, 0o755)
        try:
            shell = Shell(self.presenter, scratch, self.talk.workdir)
            self.start(shell)
            local |= {h.strip().lower() for h in self.env.get("no_proxy", "").split(",") if h.strip()}
            self.web = Web(self.proxy, local)
            print(f"talk: {self.talk.title} ({len(self.talk.steps)} steps) in {self.presenter.user}'s shell, "
                  f"scratch directory for {self.talk.workdir}", file=out, flush=True)
            for problem in self.requires:
                print(f"  FAIL  requires: {problem}", file=out, flush=True)
            for st in self.talk.steps:
                res = Result(st)
                t = time.monotonic()
                checkable = st.hotkey or st.yasnippets or st.command is not None or st.open or st.expect \
                    or st.needs.pip or st.needs.apt or st.needs.urls
                if not checkable:
                    res.status = "skip"
                else:
                    self.attribute_needs(res)
                    self.check_snippets(res, shell)
                    if st.command is not None:
                        self.run_command(res, shell)
                    self.check_expect_url(res)
                res.seconds = time.monotonic() - t
                self.results.append(res)
                mark = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}[res.status]
                print(f"  {mark}  {st.id:<16} {res.reason()} ({res.seconds:.1f} s)", file=out, flush=True)
                for m in res.misses:
                    print(f"          miss {m['kind']} {m['what']} -> {m['fix']}", file=out, flush=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        seconds = time.monotonic() - t0
        passed = sum(r.status == "pass" for r in self.results)
        failed = sum(r.status == "fail" for r in self.results)
        print(f"talk: {passed} passed, {failed} failed, "
              f"{sum(r.status == 'skip' for r in self.results)} skipped of {len(self.results)} steps"
              + (f", {len(self.requires)} requirement(s) missing" if self.requires else "")
              + f" in {seconds:.1f} s", file=out, flush=True)
        return {"file": self.talk.path, "title": self.talk.title,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
                "seconds": round(seconds, 2), "passed": passed, "failed": failed,
                "skipped": sum(r.status == "skip" for r in self.results),
                "user": self.presenter.user, "requires": self.requires,
                "steps": [r.to_dict() for r in self.results]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="demolab-talk rehearse", description=__doc__.splitlines()[0])
    ap.add_argument("--talk", default=os.environ.get("DEMOLAB_TALK"), help="default: the installed talk")
    ap.add_argument("--user", help="the presenter (default: whose home has the presenter_kit shell settings)")
    ap.add_argument("--home", help="the presenter's home (default: from the user database)")
    ap.add_argument("--proxy", help="the lab's caching proxy (default: lab.json's)")
    ap.add_argument("--demo", help="the demo app, for root-relative links (default: lab.json's)")
    ap.add_argument("--miss-log", type=Path, help="the proxy's miss log (default: lab.json's)")
    ap.add_argument("--misses", type=Path, help="JSON list of misses demolab-rehearse's checks found")
    ap.add_argument("--out", type=Path, help="write the report's JSON here")
    ap.add_argument("--no-clips", action="store_true", help="no screen clips even with a display")
    a = ap.parse_args(argv)
    try:
        a.talk = a.talk or str(paths.TALK_FILE)
        a.proxy = a.proxy or paths.PROXY_URL
        a.demo = a.demo or paths.DEMO_URL
        a.miss_log = a.miss_log or paths.MISS_LOG
        talk = load(a.talk)
    except (TalkError, paths.LabNotProvisioned) as exc:
        print(f"demolab-talk rehearse: {exc}", file=sys.stderr)
        return 2
    if not os.access(ASCIINEMA, os.X_OK):
        print(f"demolab-talk rehearse: {ASCIINEMA} is missing (Debian's asciinema; the talk role installs it)",
              file=sys.stderr)
        return 2
    earlier = json.loads(a.misses.read_text()) if a.misses else []
    clips = not a.no_clips and bool(os.environ.get("DISPLAY")) and shutil.which("lab-record") is not None
    reh = Rehearsal(talk, find_presenter(a.user, a.home), proxy=a.proxy, demo=a.demo,
                    miss_log=a.miss_log, earlier_misses=earlier, clips=clips)
    report = reh.run()
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["failed"] == 0 and not report["requires"] else 1


if __name__ == "__main__":
    sys.exit(main())
