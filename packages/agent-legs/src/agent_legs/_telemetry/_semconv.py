"""Every span attribute name Agent Legs writes, as a constant: the one place these strings are spelled.

Invariant: no module of ``packages/*/src`` spells one of these names as a string literal; it imports the
constant (``tests/test_semconv.py`` checks it, the action families' directories excepted until their
literals are replaced). A renamed attribute is renamed here, once, and the docs' table
(``docs/telemetry.md``) follows. Agent Legs emits no OpenInference attributes (``openinference.*``,
``input.value``...): its spans follow the OpenTelemetry GenAI conventions, which Phoenix, Langfuse and
the OpenTelemetry backends read; nesting under OpenInference's spans is the adapters' business.

=====================================  ===================================  ======================================
constant                               name                                 where / value
=====================================  ===================================  ======================================
**OpenTelemetry GenAI** (``gen_ai.*``, semantic conventions for GenAI spans)
-------------------------------------------------------------------------------------------------------------
``GEN_AI_OPERATION_NAME``              ``gen_ai.operation.name``            ``execute_tool`` on every action span;
                                                                            ``invoke_agent`` on the demo's root
``GEN_AI_TOOL_NAME``                   ``gen_ai.tool.name``                 the tool name (``files_read``)
``GEN_AI_TOOL_TYPE``                   ``gen_ai.tool.type``                 ``function``
``GEN_AI_TOOL_DESCRIPTION``            ``gen_ai.tool.description``          the description the model reads
``GEN_AI_TOOL_CALL_ID``                ``gen_ai.tool.call.id``              the framework's tool call id
``GEN_AI_TOOL_CALL_ARGUMENTS``         ``gen_ai.tool.call.arguments``       arguments JSON (content capture)
``GEN_AI_TOOL_CALL_RESULT``            ``gen_ai.tool.call.result``          the output text (content capture)
``GEN_AI_AGENT_NAME``                  ``gen_ai.agent.name``                the demo's ``invoke_agent`` root span
**OpenTelemetry general** (error, HTTP, URL, server conventions), on action and step spans
-------------------------------------------------------------------------------------------------------------
``ERROR_TYPE``                         ``error.type``                       the error type of a failed call/step
``HTTP_REQUEST_METHOD``                ``http.request.method``              ``HTTP <METHOD>`` step span
``HTTP_REQUEST_RESEND_COUNT``          ``http.request.resend_count``        ``HTTP <METHOD>`` (redirects, retries)
``HTTP_RESPONSE_STATUS_CODE``          ``http.response.status_code``        ``HTTP <METHOD>``, ``browser page load``
``URL_FULL``                           ``url.full``                         without the query string
``SERVER_ADDRESS``                     ``server.address``                   HTTP, SMTP and IMAP step spans
``SERVER_PORT``                        ``server.port``                      HTTP, SMTP and IMAP step spans
**Agent Legs, every action span** (``agent_legs.*``)
-------------------------------------------------------------------------------------------------------------
``AGENT_LEGS_ACTION``                  ``agent_legs.action``                the action name (``files.read``)
``AGENT_LEGS_SESSION``                 ``agent_legs.session``               the session
``AGENT_LEGS_DECISION``                ``agent_legs.decision``              the policy's decision
``AGENT_LEGS_OUTCOME``                 ``agent_legs.outcome``               ``ok`` or the error type
``AGENT_LEGS_RULE``                    ``agent_legs.rule``                  the rule that decided
``AGENT_LEGS_APPROVAL_DECISION``       ``agent_legs.approval.decision``     ``approved``/``rejected``/``edited``
``AGENT_LEGS_APPROVAL_BY``             ``agent_legs.approval.by``           who decided
``AGENT_LEGS_VERSION``                 ``agent_legs.version``               resource attribute of our provider
**Agent Legs, per family** (set by the action or on its step spans)
-------------------------------------------------------------------------------------------------------------
``AGENT_LEGS_CODE_NETWORK``            ``agent_legs.code.network``          ``sandbox container start``
``AGENT_LEGS_CODE_LANGUAGE``           ``agent_legs.code.language``         ``sandbox exec``
``AGENT_LEGS_CODE_CONTAINER``          ``agent_legs.code.container``        ``sandbox exec`` (short id)
``AGENT_LEGS_CODE_NEW_KERNEL``         ``agent_legs.code.new_kernel``       ``sandbox exec``
``AGENT_LEGS_EMAIL_MESSAGE_ID``        ``agent_legs.email.message_id``      ``email.send`` action span
``AGENT_LEGS_EMAIL_RECIPIENTS``        ``agent_legs.email.recipients``      ``smtp send`` (a count)
``AGENT_LEGS_EMAIL_BYTES``             ``agent_legs.email.bytes``           ``smtp send``
``AGENT_LEGS_EMAIL_ATTEMPT``           ``agent_legs.email.attempt``         ``smtp send`` (1-based)
``AGENT_LEGS_EMAIL_REFUSED``           ``agent_legs.email.refused``         ``smtp send`` (refused recipients)
``AGENT_LEGS_EMAIL_OPERATION``         ``agent_legs.email.operation``       ``imap session``
``AGENT_LEGS_MCP_SERVER``              ``agent_legs.mcp.server``            an MCP tool's action span
``AGENT_LEGS_MCP_TOOL``                ``agent_legs.mcp.tool``              an MCP tool's action span
``AGENT_LEGS_BROWSER_QUEUE_DEPTH``     ``agent_legs.browser.queue_depth``   a browser action span: calls ahead of it
                                                                            when it queued for a load slot (0: none)
``AGENT_LEGS_BROWSER_QUEUE_WAIT_MS``   ``agent_legs.browser.queue_wait_ms`` a browser action span: time queued
``AGENT_LEGS_BROWSER_SERVER``          ``agent_legs.browser.server``        ``browser new context`` (a server of
                                                                            ``ws_endpoints``, without query)
``AGENT_LEGS_BROWSER_READ_REUSED``     ``agent_legs.browser.read_reused``   a browser action span that read the page:
                                                                            unchanged since the last read, reused
``BROWSER_EXECUTABLE``                 ``browser.executable``               ``browser launch`` (a local Chromium)
``BROWSER_VERSION``                    ``browser.version``                  ``browser launch``
``BROWSER_PROFILE``                    ``browser.profile``                  ``browser new context`` (a named profile)
=====================================  ===================================  ======================================

Agent Legs records no span events. ``service.name`` (resource) comes from the SDK's own constant.
"""

from __future__ import annotations

__all__ = [
    "AGENT_LEGS_ACTION",
    "AGENT_LEGS_APPROVAL_BY",
    "AGENT_LEGS_APPROVAL_DECISION",
    "AGENT_LEGS_BROWSER_QUEUE_DEPTH",
    "AGENT_LEGS_BROWSER_QUEUE_WAIT_MS",
    "AGENT_LEGS_BROWSER_READ_REUSED",
    "AGENT_LEGS_BROWSER_SERVER",
    "AGENT_LEGS_CODE_CONTAINER",
    "AGENT_LEGS_CODE_LANGUAGE",
    "AGENT_LEGS_CODE_NETWORK",
    "AGENT_LEGS_CODE_NEW_KERNEL",
    "AGENT_LEGS_DECISION",
    "AGENT_LEGS_EMAIL_ATTEMPT",
    "AGENT_LEGS_EMAIL_BYTES",
    "AGENT_LEGS_EMAIL_MESSAGE_ID",
    "AGENT_LEGS_EMAIL_OPERATION",
    "AGENT_LEGS_EMAIL_RECIPIENTS",
    "AGENT_LEGS_EMAIL_REFUSED",
    "AGENT_LEGS_MCP_SERVER",
    "AGENT_LEGS_MCP_TOOL",
    "AGENT_LEGS_OUTCOME",
    "AGENT_LEGS_RULE",
    "AGENT_LEGS_SESSION",
    "AGENT_LEGS_VERSION",
    "BROWSER_EXECUTABLE",
    "BROWSER_PROFILE",
    "BROWSER_VERSION",
    "ERROR_TYPE",
    "GEN_AI_AGENT_NAME",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_TOOL_CALL_ARGUMENTS",
    "GEN_AI_TOOL_CALL_ID",
    "GEN_AI_TOOL_CALL_RESULT",
    "GEN_AI_TOOL_DESCRIPTION",
    "GEN_AI_TOOL_NAME",
    "GEN_AI_TOOL_TYPE",
    "HTTP_REQUEST_METHOD",
    "HTTP_REQUEST_RESEND_COUNT",
    "HTTP_RESPONSE_STATUS_CODE",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "URL_FULL",
]

# -- OpenTelemetry GenAI ------------------------------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_TOOL_DESCRIPTION = "gen_ai.tool.description"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"

# -- OpenTelemetry general ----------------------------------------------------------------------
ERROR_TYPE = "error.type"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_REQUEST_RESEND_COUNT = "http.request.resend_count"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_FULL = "url.full"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

# -- Agent Legs: every action span --------------------------------------------------------------
AGENT_LEGS_ACTION = "agent_legs.action"
AGENT_LEGS_SESSION = "agent_legs.session"
AGENT_LEGS_DECISION = "agent_legs.decision"
AGENT_LEGS_OUTCOME = "agent_legs.outcome"
AGENT_LEGS_RULE = "agent_legs.rule"
AGENT_LEGS_APPROVAL_DECISION = "agent_legs.approval.decision"
AGENT_LEGS_APPROVAL_BY = "agent_legs.approval.by"
AGENT_LEGS_VERSION = "agent_legs.version"

# -- Agent Legs: per family ---------------------------------------------------------------------
AGENT_LEGS_CODE_NETWORK = "agent_legs.code.network"
AGENT_LEGS_CODE_LANGUAGE = "agent_legs.code.language"
AGENT_LEGS_CODE_CONTAINER = "agent_legs.code.container"
AGENT_LEGS_CODE_NEW_KERNEL = "agent_legs.code.new_kernel"
AGENT_LEGS_EMAIL_MESSAGE_ID = "agent_legs.email.message_id"
AGENT_LEGS_EMAIL_RECIPIENTS = "agent_legs.email.recipients"
AGENT_LEGS_EMAIL_BYTES = "agent_legs.email.bytes"
AGENT_LEGS_EMAIL_ATTEMPT = "agent_legs.email.attempt"
AGENT_LEGS_EMAIL_REFUSED = "agent_legs.email.refused"
AGENT_LEGS_EMAIL_OPERATION = "agent_legs.email.operation"
AGENT_LEGS_MCP_SERVER = "agent_legs.mcp.server"
AGENT_LEGS_MCP_TOOL = "agent_legs.mcp.tool"
AGENT_LEGS_BROWSER_QUEUE_DEPTH = "agent_legs.browser.queue_depth"
AGENT_LEGS_BROWSER_QUEUE_WAIT_MS = "agent_legs.browser.queue_wait_ms"
AGENT_LEGS_BROWSER_SERVER = "agent_legs.browser.server"
AGENT_LEGS_BROWSER_READ_REUSED = "agent_legs.browser.read_reused"
BROWSER_EXECUTABLE = "browser.executable"
BROWSER_VERSION = "browser.version"
BROWSER_PROFILE = "browser.profile"
