"""demolab's talk as code: the talk file's model, its command line, the rehearsal of its steps
and the on-stage player. See docs/TALK.md."""

from .model import Talk, TalkError, load

__all__ = ["Talk", "TalkError", "load"]
