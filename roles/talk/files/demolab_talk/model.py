"""The talk file: load, validate, and hand out a typed model.

A talk file is YAML (docs/TALK.md is the reference). Every error names the file, the line
and, where there is one, the step: ``talk/talk.yml:42: step 'redis': unknown key 'snipet'``.
Loading is all-or-nothing: a file with one error gives no model at all, so nothing that
reads a talk is ever half-applied.

Only the standard library and PyYAML (Debian's python3-yaml; Ansible's own dependency on the
controller), so the same code runs on the controller (Ansible) and on a lab host.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
HOTKEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
URL_RE = re.compile(r"^https?://[^\s/]+")
CLIPBOARDS = ("clipboard", "primary", "both")

TOP_KEYS = {"title", "author", "source", "workdir", "requires", "steps"}
REQUIRES_KEYS = {"env", "aliases", "commands"}
STEP_KEYS = {"id", "title", "hotkey", "yasnippets", "command", "expect", "open", "needs", "risky",
             "timeout", "notes"}
HOTKEY_KEYS = {"name", "description", "snippet", "snippet_file", "run", "clipboard"}
YASNIPPET_KEYS = {"mode", "key", "name", "body", "file"}
EXPECT_KEYS = {"exit", "output", "url", "status"}
NEEDS_KEYS = {"pip", "apt", "urls"}
DEFAULT_TIMEOUT = 60


class TalkError(Exception):
    """A talk file that cannot be used; the message is one line naming file, line and step."""


@dataclass
class Hotkey:
    name: str
    description: str = ""
    snippet: str | None = None
    run: str | None = None
    clipboard: str = "clipboard"


@dataclass
class Yasnippet:
    mode: str
    key: str
    name: str
    body: str


@dataclass
class Expect:
    exit: int | None = None
    output: str | None = None
    url: str | None = None
    status: int | None = None


@dataclass
class Needs:
    pip: list[str] = field(default_factory=list)
    apt: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)


@dataclass
class Step:
    id: str
    title: str
    line: int
    hotkey: Hotkey | None = None
    yasnippets: list[Yasnippet] = field(default_factory=list)
    command: str | None = None
    expect: Expect | None = None
    open: str | None = None
    needs: Needs = field(default_factory=Needs)
    risky: bool = False
    timeout: int = DEFAULT_TIMEOUT
    notes: str = ""


@dataclass
class Requires:
    env: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@dataclass
class Talk:
    path: str
    title: str
    steps: list[Step]
    author: str = ""
    source: str = ""
    workdir: str = "~/talk"
    requires: Requires = field(default_factory=Requires)
    # The snippet files the talk reads (snippet_file, yasnippet file), relative to its directory:
    # what is installed beside the talk file.
    files: list[str] = field(default_factory=list)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def needs(self) -> Needs:
        """Everything the talk needs offline, merged over the steps (first occurrence kept)."""
        out = Needs()
        for s in self.steps:
            for kind in ("pip", "apt", "urls"):
                have = getattr(out, kind)
                have.extend(x for x in getattr(s.needs, kind) if x not in have)
        return out

    def events(self) -> dict[str, dict[str, str]]:
        """The hotkey launcher's events (lab-snippet's file format), in step order."""
        out: dict[str, dict[str, str]] = {}
        for s in self.steps:
            if s.hotkey is None:
                continue
            ev = {"description": s.hotkey.description or s.title}
            if s.hotkey.snippet is not None:
                ev["snippet"] = s.hotkey.snippet
            if s.hotkey.run is not None:
                ev["command"] = s.hotkey.run
            if s.hotkey.clipboard != "clipboard":
                ev["clipboard"] = s.hotkey.clipboard
            out[s.hotkey.name] = ev
        return out

    def yasnippets(self) -> list[Yasnippet]:
        return [y for s in self.steps for y in s.yasnippets]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["needs"] = asdict(self.needs())
        data["events"] = self.events()
        data["yasnippets"] = [asdict(y) for y in self.yasnippets()]
        return data


# --------------------------------------------------------------------------------------------
class _Ctx:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.step: str | None = None
        self.files: list[str] = []

    def err(self, node: yaml.Node | None, msg: str) -> TalkError:
        where = f"{self.path}:{node.start_mark.line + 1}" if node is not None else str(self.path)
        who = f" step {self.step!r}:" if self.step else ""
        return TalkError(f"{where}:{who} {msg}")

    # -- typed readers over yaml nodes ---------------------------------------------------
    def mapping(self, node: yaml.Node, what: str, allowed: set[str]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.err(node, f"{what} must be a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        where = "" if what == "step" else f"{what}: "  # a step's own keys: "step 'x': unknown key"
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise self.err(k, f"{where}keys must be plain names")
            if k.value not in allowed:
                raise self.err(k, f"{where}unknown key {k.value!r} (known: {', '.join(sorted(allowed))})")
            if k.value in out:
                raise self.err(k, f"{where}key {k.value!r} given twice")
            out[k.value] = (k, v)
        return out

    def string(self, node: yaml.Node, what: str, *, empty: bool = False) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in ("tag:yaml.org,2002:str",
                                                                      "tag:yaml.org,2002:int"):
            raise self.err(node, f"{what} must be a string")
        if not empty and not node.value.strip():
            raise self.err(node, f"{what} must not be empty")
        return node.value

    def integer(self, node: yaml.Node, what: str, lo: int, hi: int) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:int":
            raise self.err(node, f"{what} must be a whole number")
        val = int(yaml.safe_load(node.value))
        if not lo <= val <= hi:
            raise self.err(node, f"{what} must be between {lo} and {hi}, not {val}")
        return val

    def boolean(self, node: yaml.Node, what: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            raise self.err(node, f"{what} must be true or false")
        return bool(yaml.safe_load(node.value))

    def strings(self, node: yaml.Node, what: str) -> list[str]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.err(node, f"{what} must be a list")
        out = []
        for item in node.value:
            val = self.string(item, f"{what} item")
            if val in out:
                raise self.err(item, f"{what}: {val!r} listed twice")
            out.append(val)
        return out

    def url(self, node: yaml.Node, what: str) -> str:
        val = self.string(node, what).strip()
        if not URL_RE.match(val):
            raise self.err(node, f"{what} must be an http:// or https:// URL, not {val!r}")
        return val

    def text_or_file(self, fields: dict, text_key: str, file_key: str, what: str, node: yaml.Node) -> str | None:
        if text_key in fields and file_key in fields:
            raise self.err(fields[file_key][0], f"{what}: give {text_key} or {file_key}, not both")
        if text_key in fields:
            return self.string(fields[text_key][1], f"{what} {text_key}")
        if file_key in fields:
            rel = self.string(fields[file_key][1], f"{what} {file_key}")
            target = (self.path.parent / rel)
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise self.err(fields[file_key][1], f"{what}: {file_key} {rel!r} must be a path inside the "
                                                    f"talk's directory (relative, no ..), installed with it")
            try:
                text = target.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise self.err(fields[file_key][1], f"{what}: {file_key} {rel!r} does not exist "
                                                    f"(looked for {target})") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise self.err(fields[file_key][1], f"{what}: cannot read {file_key} {rel!r}: {exc}") from None
            norm = Path(rel).as_posix()
            if norm not in self.files:
                self.files.append(norm)
            return text
        return None


def _hotkey(ctx: _Ctx, node: yaml.Node) -> Hotkey:
    f = ctx.mapping(node, "hotkey", HOTKEY_KEYS)
    if "name" not in f:
        raise ctx.err(node, "hotkey: needs a name (the letters typed in the chooser)")
    name = ctx.string(f["name"][1], "hotkey name")
    if not HOTKEY_RE.match(name):
        raise ctx.err(f["name"][1], f"hotkey name {name!r}: letters, digits, _ . + - only")
    hk = Hotkey(name=name)
    if "description" in f:
        hk.description = ctx.string(f["description"][1], "hotkey description")
    hk.snippet = ctx.text_or_file(f, "snippet", "snippet_file", "hotkey", node)
    if "run" in f:
        hk.run = ctx.string(f["run"][1], "hotkey run")
    if hk.snippet is None and hk.run is None:
        raise ctx.err(node, f"hotkey {name!r} has neither a snippet (or snippet_file) nor run")
    if "clipboard" in f:
        hk.clipboard = ctx.string(f["clipboard"][1], "hotkey clipboard")
        if hk.clipboard not in CLIPBOARDS:
            raise ctx.err(f["clipboard"][1], f"hotkey clipboard must be one of {', '.join(CLIPBOARDS)}")
    return hk


def _yasnippet(ctx: _Ctx, node: yaml.Node) -> Yasnippet:
    f = ctx.mapping(node, "yasnippet", YASNIPPET_KEYS)
    for req in ("mode", "key"):
        if req not in f:
            raise ctx.err(node, f"yasnippet: needs {req}")
    mode = ctx.string(f["mode"][1], "yasnippet mode")
    key = ctx.string(f["key"][1], "yasnippet key")
    if not HOTKEY_RE.match(mode) or not HOTKEY_RE.match(key):
        raise ctx.err(node, "yasnippet mode and key: letters, digits, _ . + - only")
    body = ctx.text_or_file(f, "body", "file", "yasnippet", node)
    if body is None:
        raise ctx.err(node, f"yasnippet {key!r} needs a body or a file")
    name = ctx.string(f["name"][1], "yasnippet name") if "name" in f else key
    return Yasnippet(mode=mode, key=key, name=name, body=body)


def _expect(ctx: _Ctx, node: yaml.Node) -> Expect:
    f = ctx.mapping(node, "expect", EXPECT_KEYS)
    ex = Expect()
    if "exit" in f:
        ex.exit = ctx.integer(f["exit"][1], "expect exit", 0, 255)
    if "output" in f:
        ex.output = ctx.string(f["output"][1], "expect output")
        try:
            re.compile(ex.output)
        except re.error as exc:
            raise ctx.err(f["output"][1], f"expect output is not a valid regular expression: {exc}") from None
    if "url" in f:
        ex.url = ctx.url(f["url"][1], "expect url")
    if "status" in f:
        ex.status = ctx.integer(f["status"][1], "expect status", 100, 599)
        if ex.url is None:
            raise ctx.err(f["status"][0], "expect status needs an expect url")
    if ex.url is not None and ex.status is None:
        ex.status = 200
    return ex


def _needs(ctx: _Ctx, node: yaml.Node) -> Needs:
    f = ctx.mapping(node, "needs", NEEDS_KEYS)
    n = Needs()
    if "pip" in f:
        n.pip = ctx.strings(f["pip"][1], "needs pip")
    if "apt" in f:
        n.apt = ctx.strings(f["apt"][1], "needs apt")
    if "urls" in f:
        n.urls = ctx.strings(f["urls"][1], "needs urls")
        for item, val in zip(f["urls"][1].value, n.urls, strict=True):
            ctx.url(item, "needs urls item")
            del val
    return n


def _step(ctx: _Ctx, node: yaml.Node, seen: dict[str, int], hotkeys: dict[str, str],
          yas: dict[tuple[str, str], str]) -> Step:
    ctx.step = None
    if not isinstance(node, yaml.MappingNode):
        raise ctx.err(node, "each step must be a mapping with at least an id and a title")
    # Name the step in errors as early as possible: read its id before anything else.
    ids = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "id"]
    if not ids:
        raise ctx.err(node, "a step needs an id")
    sid = ctx.string(ids[0], "step id")
    if not ID_RE.match(sid):
        raise ctx.err(ids[0], f"step id {sid!r}: lower-case letters, digits and - only")
    ctx.step = sid
    if sid in seen:
        raise ctx.err(ids[0], f"duplicate step id (first defined at line {seen[sid]})")
    seen[sid] = ids[0].start_mark.line + 1
    f = ctx.mapping(node, "step", STEP_KEYS)
    if "title" not in f:
        raise ctx.err(node, "needs a title")
    st = Step(id=sid, title=ctx.string(f["title"][1], "title"), line=node.start_mark.line + 1)
    if "hotkey" in f:
        st.hotkey = _hotkey(ctx, f["hotkey"][1])
        if st.hotkey.name in hotkeys:
            raise ctx.err(f["hotkey"][1], f"hotkey {st.hotkey.name!r} is already step {hotkeys[st.hotkey.name]!r}'s")
        hotkeys[st.hotkey.name] = sid
    if "yasnippets" in f:
        seq = f["yasnippets"][1]
        if not isinstance(seq, yaml.SequenceNode):
            raise ctx.err(seq, "yasnippets must be a list")
        for item in seq.value:
            y = _yasnippet(ctx, item)
            if (y.mode, y.key) in yas:
                raise ctx.err(item, f"yasnippet {y.mode}/{y.key} is already step {yas[(y.mode, y.key)]!r}'s")
            yas[(y.mode, y.key)] = sid
            st.yasnippets.append(y)
    if "command" in f:
        st.command = ctx.string(f["command"][1], "command").rstrip("\n")
    if "open" in f:
        st.open = ctx.url(f["open"][1], "open")
    if "expect" in f:
        st.expect = _expect(ctx, f["expect"][1])
        if st.command is None and st.expect.url is None:
            raise ctx.err(f["expect"][0], "expect needs a command to check, or an expect url")
        if st.command is None and (st.expect.exit is not None or st.expect.output is not None):
            raise ctx.err(f["expect"][0], "expect exit/output need a command")
    if st.command is not None:
        st.expect = st.expect or Expect()
        if st.expect.exit is None:
            st.expect.exit = 0
    if "needs" in f:
        st.needs = _needs(ctx, f["needs"][1])
    if "risky" in f:
        st.risky = ctx.boolean(f["risky"][1], "risky")
    if "timeout" in f:
        st.timeout = ctx.integer(f["timeout"][1], "timeout", 1, 3600)
    if "notes" in f:
        st.notes = ctx.string(f["notes"][1], "notes", empty=True)
    if st.hotkey is None and not st.yasnippets and st.command is None and st.open is None \
            and st.expect is None and not st.notes:
        raise ctx.err(node, "does nothing: give it a hotkey, yasnippets, a command, an open URL or notes")
    return st


def load(path: str | Path) -> Talk:
    """Read and validate a talk file; raise TalkError (one line) on the first problem."""
    path = Path(path)
    ctx = _Ctx(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TalkError(f"{path}: no such talk file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TalkError(f"{path}: cannot read the talk file: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TalkError(f"{where}: malformed YAML: {problem}") from None
    if root is None:
        raise TalkError(f"{path}: the talk file is empty")
    top = ctx.mapping(root, "the talk", TOP_KEYS)
    for req in ("title", "steps"):
        if req not in top:
            raise ctx.err(root, f"the talk needs {req}")
    talk = Talk(path=str(path), title=ctx.string(top["title"][1], "title"), steps=[])
    for key in ("author", "source", "workdir"):
        if key in top:
            setattr(talk, key, ctx.string(top[key][1], key))
    if "requires" in top:
        f = ctx.mapping(top["requires"][1], "requires", REQUIRES_KEYS)
        for key in REQUIRES_KEYS & f.keys():
            vals = ctx.strings(f[key][1], f"requires {key}")
            if key == "env":
                for item, val in zip(f[key][1].value, vals, strict=True):
                    if not ENV_RE.match(val):
                        raise ctx.err(item, f"requires env: {val!r} is not a variable name")
            setattr(talk.requires, key, vals)
    steps = top["steps"][1]
    if not isinstance(steps, yaml.SequenceNode) or not steps.value:
        raise ctx.err(steps, "steps must be a non-empty list")
    seen: dict[str, int] = {}
    hotkeys: dict[str, str] = {}
    yas: dict[tuple[str, str], str] = {}
    for node in steps.value:
        talk.steps.append(_step(ctx, node, seen, hotkeys, yas))
    talk.files = ctx.files
    return talk
