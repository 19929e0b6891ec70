"""demolab_cache: record/replay HTTP(S) cache plugin for proxy.py.

Modes:
  record   forward every request upstream and store each complete response
  offline  answer from the store only; a miss is a 504 and a line in the miss log
"""

__version__ = "1.0.0"
