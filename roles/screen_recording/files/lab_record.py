#!/usr/bin/python3
"""lab-record: record the screen (x11grab) + audio with the lab FFmpeg, stop it, render it.

  lab-record start [--size 1024x768] [--fps 12] [--audio pulse|alsa|none]
                   [--audio-device DEV] [--display :0] [--out FILE]
  lab-record stop
  lab-record status
  lab-record render IN [--audio FILE] [--fps N] [--format webm|mp4] [--normalize] OUT

Recording: audio input first (else the first frame freezes), libx264 veryfast, yuv420p,
GOP 24, Matroska, so an abrupt stop still leaves a file that `stop` repairs with a -c copy
remux. `stop` sends SIGINT (FFmpeg flushes and exits), then SIGTERM, then SIGKILL.

Settings come from the options, then the environment (FFMPEG, DISPLAY), then the config
file (LAB_RECORD_CONFIG, default lab-record.ini in the lab's etc_dir of lab.json, section [record]).
Exit codes: 0 ok, 1 error, 2 usage, 3 `status` when nothing is recording.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# The lab's settings (the lab role writes it; DEMOLAB_LAB_JSON names another, for tests).
LAB_JSON = Path(os.environ.get("DEMOLAB_LAB_JSON") or "/etc/demolab/lab.json")


def config_file() -> str:
    """LAB_RECORD_CONFIG, else lab-record.ini in the lab's etc_dir ("" where there is no lab)."""
    if os.environ.get("LAB_RECORD_CONFIG"):
        return os.environ["LAB_RECORD_CONFIG"]
    try:
        return str(Path(json.loads(LAB_JSON.read_text())["etc_dir"]) / "lab-record.ini")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


CONFIG_FILE = config_file()
DEFAULTS = {
    "ffmpeg": "",
    "ffmpeg_profile": "/etc/profile.d/demolab-ffmpeg.sh",
    "size": "1024x768",
    "fps": "12",
    "audio": "pulse",
    "pulse_device": "default",
    "alsa_device": "default",
    "out_dir": "~/Videos/lab-record",
    "startup_timeout": "8",
    "stop_timeout": "10",
    "render_timeout": "0",
}


class LabError(Exception):
    """An error the user can act on: printed without a traceback."""


def load_config() -> dict[str, str]:
    cfg = dict(DEFAULTS)
    parser = configparser.ConfigParser()
    try:
        parser.read(CONFIG_FILE)
    except configparser.Error as exc:
        raise LabError(f"cannot parse {CONFIG_FILE}: {exc}") from exc
    if parser.has_section("record"):
        cfg.update({k: v for k, v in parser.items("record") if k in DEFAULTS})
    return cfg


def profile_ffmpeg(path: str) -> str:
    """FFMPEG=... from the ffmpeg role's profile script (desktop hotkeys may not source it)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    m = re.search(r"^\s*(?:export\s+)?FFMPEG=['\"]?([^'\"\s]+)", text, re.M)
    return m.group(1) if m else ""


def find_ffmpeg(cfg: dict[str, str]) -> str:
    for cand in (os.environ.get("FFMPEG", ""), cfg["ffmpeg"], profile_ffmpeg(cfg["ffmpeg_profile"]),
                 shutil.which("ffmpeg") or ""):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise LabError("no FFmpeg found: install the lab FFmpeg (role ffmpeg) or set FFMPEG=/path/to/ffmpeg")


def find_ffprobe(ffmpeg: str) -> str:
    sibling = Path(ffmpeg).with_name("ffprobe")
    for cand in (str(sibling), os.environ.get("FFPROBE", ""), shutil.which("ffprobe") or ""):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise LabError(f"no ffprobe next to {ffmpeg} nor on PATH")


def state_dir() -> Path:
    base = os.environ.get("LAB_RECORD_STATE_DIR")
    if base:
        path = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "lab-record"
    else:
        path = Path.home() / ".cache" / "lab-record"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def state_file() -> Path:
    return state_dir() / "state.json"


def read_state() -> dict | None:
    try:
        return json.loads(state_file().read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


def write_state(state: dict) -> None:
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, state_file())


def pid_alive(pid: int, marker: str = "") -> bool:
    """True if pid runs (not a zombie) and, when given, its cmdline contains marker."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return False
    if marker:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return marker in cmdline
    return True


# ----------------------------------------------------------------- pre-flight checks
def check_display(display: str) -> None:
    if not display:
        raise LabError("no DISPLAY set: run lab-record inside your X session, or pass --display :0 "
                       "(headless: start `Xvfb :99 -screen 0 1024x768x24` and use --display :99)")
    m = re.fullmatch(r"([^:]*):(\d+)(?:\.(\d+))?", display)
    if not m:
        raise LabError(f"DISPLAY={display!r} is not of the form [host]:N[.screen]")
    host, num = m.group(1), int(m.group(2))
    try:
        if host in ("", "unix"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            try:
                sock.connect(f"/tmp/.X11-unix/X{num}")
            except OSError:  # fall back to the abstract socket Xorg/Xvfb also listen on
                sock.close()
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(2)
                sock.connect(f"\0/tmp/.X11-unix/X{num}")
        else:
            sock = socket.create_connection((host, 6000 + num), timeout=2)
        sock.close()
    except OSError as exc:
        raise LabError(f"X server {display} unreachable ({exc.strerror or exc}): is X (or Xvfb) running "
                       f"on that display? Check DISPLAY / --display") from exc


def check_audio(kind: str, device: str) -> None:
    if kind == "none":
        return
    if kind == "pulse":
        server = os.environ.get("PULSE_SERVER", "")
        if server.startswith("unix:"):
            paths = [server[5:]]
        elif server:
            return  # TCP server: let FFmpeg report
        else:
            runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
            paths = [f"{runtime}/pulse/native", "/run/pulse/native", "/var/run/pulse/native"]
        for path in paths:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(2)
                    sock.connect(path)
                return
            except OSError:
                continue
        raise LabError("no PulseAudio server reachable (tried " + ", ".join(paths) + "): start PulseAudio "
                       "(or PipeWire's pulse server), or record without sound: --audio none")
    if kind == "alsa":
        captures = list(Path("/dev/snd").glob("pcmC*D*c")) if Path("/dev/snd").is_dir() else []
        if not captures and device in ("default", ""):
            raise LabError("no ALSA capture device (/dev/snd/pcm*c): plug in a microphone, use "
                           "--audio pulse, or record without sound: --audio none")
        return
    raise LabError(f"unknown audio input {kind!r}: use pulse, alsa or none")


def diagnose(log_text: str, display: str, audio: str, device: str) -> str:
    low = log_text.lower()
    lines = log_text.splitlines()
    if audio != "none" and any(line.startswith(f"{device}: ") for line in lines):
        return (f"FFmpeg cannot open the {audio} audio input {device!r}: list the sources with "
                "`pactl list short sources` (pulse) or `arecord -L` (alsa) and pass --audio-device, "
                "or record without sound: --audio none")
    if "outside the screen" in low:
        size = re.search(r"outside the screen size (\d+x\d+)", log_text)
        return f"the capture area is larger than the screen{' (' + size.group(1) + ')' if size else ''}: use --size"
    if any(line.startswith(f"{display}: ") for line in lines):
        return f"FFmpeg cannot grab X display {display}: check DISPLAY / --display, XAUTHORITY and --size"
    if "cannot open display" in low or "xcb_connect" in low:
        return f"FFmpeg cannot open X display {display}: check DISPLAY / --display and X authorisation (XAUTHORITY)"
    if audio != "none" and any(s in low for s in ("pulse", "alsa", "audio open failed", "no such device",
                                                  "connection refused", "no such entity")):
        return ("FFmpeg cannot open the audio input: check the device (pactl list short sources / "
                "arecord -l) and --audio-device, or use --audio none")
    return "FFmpeg exited during start-up"


# ----------------------------------------------------------------- commands
def cmd_start(args: argparse.Namespace, cfg: dict[str, str]) -> int:
    state = read_state()
    if state and pid_alive(state["pid"], "ffmpeg"):
        raise LabError(f"already recording into {state['out']} (pid {state['pid']}): run `lab-record stop` first")
    size = args.size or cfg["size"]
    if not re.fullmatch(r"\d+x\d+", size):
        raise LabError(f"--size {size!r}: expected WIDTHxHEIGHT, e.g. 1024x768")
    fps = args.fps or cfg["fps"]
    if not re.fullmatch(r"\d+(\.\d+)?", str(fps)) or float(fps) <= 0:
        raise LabError(f"--fps {fps!r}: expected a positive number")
    audio = args.audio or cfg["audio"]
    device = args.audio_device or (cfg["pulse_device"] if audio == "pulse" else cfg["alsa_device"])
    display = args.display or os.environ.get("DISPLAY", "")
    ffmpeg = find_ffmpeg(cfg)
    check_display(display)
    check_audio(audio, device)

    if args.out:
        out = Path(args.out).expanduser().resolve()
    else:
        out = Path(os.path.expanduser(cfg["out_dir"])) / time.strftime("rec-%Y%m%d-%H%M%S.mkv")
    if out.suffix.lower() != ".mkv":
        raise LabError(f"--out {out}: recordings are Matroska (.mkv) so an abrupt stop stays playable; "
                       "use `lab-record render` to make a .webm/.mp4")
    out.parent.mkdir(parents=True, exist_ok=True)

    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "info"]
    if audio != "none":  # audio input FIRST, else the first video frame freezes ~1.6 s
        cmd += ["-thread_queue_size", "512", "-f", audio, "-i", device]
    cmd += ["-thread_queue_size", "512", "-f", "x11grab", "-draw_mouse", "1",
            "-framerate", str(fps), "-video_size", size, "-i", display]
    vin = 1 if audio != "none" else 0
    cmd += ["-map", f"{vin}:v"]
    if audio != "none":
        cmd += ["-map", "0:a", "-c:a", "aac", "-b:a", "128k"]
    # Small clusters flushed to disk at once: a SIGKILL or crash loses about one GOP only.
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "24",
            "-f", "matroska", "-cluster_time_limit", "1000", "-flush_packets", "1", str(out)]
    log = state_dir() / "ffmpeg.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    write_state({"pid": proc.pid, "out": str(out), "log": str(log), "started": time.time(),
                 "display": display, "audio": audio, "audio_device": device, "size": size,
                 "fps": str(fps), "cmd": cmd})
    deadline = time.monotonic() + float(cfg["startup_timeout"])
    started = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        text = log.read_text(errors="replace")
        if "Output #0" in text and ("frame=" in text or "size=" in text):
            started = True
            break
        time.sleep(0.2)
    if not started and proc.poll() is None:  # slow start but alive: accept if Output is open
        started = "Output #0" in log.read_text(errors="replace")
    if not started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        state_file().unlink(missing_ok=True)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
        raise LabError(f"{diagnose(tail, display, audio, device)}\n--- ffmpeg log tail ({log}) ---\n{tail}")
    print(f"recording {size}@{fps} fps from {display} (audio: {audio}{'' if audio == 'none' else ' ' + device}) "
          f"into {out} (pid {proc.pid}); stop with: lab-record stop")
    return 0


def probe(ffprobe: str, path: Path, timeout: float = 60) -> dict | None:
    try:
        res = subprocess.run([ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                              str(path)], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        return None
    try:
        info = json.loads(res.stdout)
    except ValueError:
        return None
    return info if info.get("streams") else None


def repair(ffmpeg: str, out: Path) -> bool:
    """Remux an abruptly ended Matroska file (-c copy) so it has an index and a duration."""
    fixed = out.with_name(out.stem + ".repair.mkv")
    res = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-y", "-v", "error", "-fflags", "+genpts+discardcorrupt",
                          "-err_detect", "ignore_err", "-i", str(out), "-map", "0", "-c", "copy",
                          "-f", "matroska", str(fixed)], capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    if res.returncode == 0 and fixed.exists() and fixed.stat().st_size > 0:
        os.replace(fixed, out)
        return True
    fixed.unlink(missing_ok=True)
    return False


def cmd_stop(args: argparse.Namespace, cfg: dict[str, str]) -> int:
    state = read_state()
    if not state:
        print("lab-record: nothing is recording", file=sys.stderr)
        return 0
    pid, out = state["pid"], Path(state["out"])
    ffmpeg = state["cmd"][0]
    clean = False
    if pid_alive(pid, "ffmpeg"):
        timeout = float(cfg["stop_timeout"])
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + wait
            while time.monotonic() < end and pid_alive(pid):
                time.sleep(0.05)
            if not pid_alive(pid):
                clean = sig != signal.SIGKILL
                break
    else:
        print(f"lab-record: the recorder (pid {pid}) had already died; repairing {out}", file=sys.stderr)
    state_file().unlink(missing_ok=True)
    if not out.exists() or out.stat().st_size == 0:
        raise LabError(f"no recording data in {out} (see {state.get('log')})")
    ffprobe = find_ffprobe(ffmpeg)
    info = probe(ffprobe, out)
    duration = float((info or {}).get("format", {}).get("duration", 0) or 0)
    if not clean or duration <= 0:
        if not repair(ffmpeg, out):
            raise LabError(f"{out} could not be repaired (see {state.get('log')})")
        info = probe(ffprobe, out)
        duration = float((info or {}).get("format", {}).get("duration", 0) or 0)
    if not info:
        raise LabError(f"{out} is not readable by ffprobe (see {state.get('log')})")
    print(f"stopped; {out} ({duration:.1f} s, {out.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_status(args: argparse.Namespace, cfg: dict[str, str]) -> int:
    state = read_state()
    if not state:
        print("not recording")
        return 3
    if not pid_alive(state["pid"], "ffmpeg"):
        print(f"not recording (the recorder pid {state['pid']} died; `lab-record stop` repairs {state['out']})")
        return 3
    out = Path(state["out"])
    size = out.stat().st_size if out.exists() else 0
    print(f"recording pid {state['pid']} for {time.time() - state['started']:.0f} s: {out} "
          f"({size / 1e6:.1f} MB, {state['size']}@{state['fps']} fps, audio {state['audio']})")
    return 0


def cmd_render(args: argparse.Namespace, cfg: dict[str, str]) -> int:
    ffmpeg = find_ffmpeg(cfg)
    ffprobe = find_ffprobe(ffmpeg)
    src, out = Path(args.input), Path(args.output)
    if not src.is_file():
        raise LabError(f"input {src} does not exist")
    info = probe(ffprobe, src)
    if not info or not any(s.get("codec_type") == "video" for s in info["streams"]):
        raise LabError(f"input {src} is not a readable video (ffprobe found no video stream)")
    fmt = args.format or (out.suffix.lstrip(".").lower() if out.suffix.lower() in (".webm", ".mp4") else "webm")
    if fmt not in ("webm", "mp4"):
        raise LabError(f"--format {fmt!r}: use webm or mp4")
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-v", "error", "-stats", "-i", str(src)]
    if args.audio:
        if not Path(args.audio).is_file() or not probe(ffprobe, Path(args.audio)):
            raise LabError(f"--audio {args.audio} is not a readable audio file")
        cmd += ["-i", args.audio, "-map", "0:v:0", "-map", "1:a:0", "-shortest"]
    else:
        cmd += ["-map", "0:v:0", "-map", "0:a:0?"]
    vf = ["format=yuv420p"]
    if args.fps:
        vf.insert(0, f"fps={args.fps}")
    cmd += ["-vf", ",".join(vf)]
    if args.normalize:
        cmd += ["-af", "loudnorm=I=-16:TP=-1.5:LRA=11"]
    if fmt == "webm":
        cmd += ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1",
                "-crf", "32", "-b:v", "2M", "-c:a", "libopus", "-b:a", "96k", "-f", "webm"]
    else:
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-c:a", "aac", "-b:a", "128k",
                "-movflags", "+faststart", "-f", "mp4"]
    tmp = out.with_name(f".{out.name}.part")
    cmd.append(str(tmp))
    timeout = float(args.timeout if args.timeout is not None else cfg["render_timeout"]) or None
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tmp.unlink(missing_ok=True)
        raise LabError(f"render took longer than {timeout} s; gave up") from exc
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise LabError(f"FFmpeg failed to render {src} (exit {res.returncode})")
    os.replace(tmp, out)
    print(f"rendered {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab-record", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start recording")
    p.add_argument("--size", help="WIDTHxHEIGHT (default from config: 1024x768)")
    p.add_argument("--fps", help="frames per second (default 12)")
    p.add_argument("--audio", choices=["pulse", "alsa", "none"])
    p.add_argument("--audio-device", help="pulse source / ALSA device (default: default)")
    p.add_argument("--display", help="X display (default $DISPLAY)")
    p.add_argument("--out", help="output .mkv")
    sub.add_parser("stop", help="stop recording cleanly (repairs an abruptly ended file)")
    sub.add_parser("status", help="is a recording running? (exit 3 if not)")
    p = sub.add_parser("render", help="fix the frame rate, mux audio, write a publishable file")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--audio", help="external audio file to use instead of the recorded sound")
    p.add_argument("--fps", help="constant output frame rate")
    p.add_argument("--format", choices=["webm", "mp4"], help="default: from OUT's extension, else webm")
    p.add_argument("--normalize", action="store_true", help="EBU R128 loudness normalisation")
    p.add_argument("--timeout", type=float, help="give up after N seconds (0: never)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config()
        commands = {"start": cmd_start, "stop": cmd_stop, "status": cmd_status, "render": cmd_render}
        return commands[args.command](args, cfg)
    except LabError as exc:
        print(f"lab-record: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
