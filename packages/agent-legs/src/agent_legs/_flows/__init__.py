"""The exfiltration guard (issue 18): private data a session read cannot leave for an untrusted
destination unapproved.

Modules, one concern each:

* ``_policy``: ``policy.flows`` (mode, trusted destinations, extra private sources, index bound);
* ``_sources``: labels of reading actions (private / untrusted) and the text of a result;
* ``_encodings``: normalisation, keyed 12-character window fingerprints, decoded views of outgoing
  text (percent, escapes, hex, base64 at every alignment);
* ``_index``: a session's index (store rows + a bounded per-worker cache);
* ``_sinks``: what each sink action sends and where, and destination trust;
* ``_guard``: ``FlowGuard.check`` (before a sink) and ``FlowGuard.record`` (after a read).

See docs/security.md ("Exfiltration guard") for what it covers and what it does not.
"""

from __future__ import annotations

from ._guard import RULE, Finding, FlowGuard
from ._policy import FlowsPolicy

__all__ = ["RULE", "Finding", "FlowGuard", "FlowsPolicy"]
