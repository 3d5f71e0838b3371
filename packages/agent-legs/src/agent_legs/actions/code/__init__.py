"""The ``code`` action family: stateful code execution in Docker sandboxes that contain and stop
(see ``agent_legs.actions`` for the layout every family shares).

One long-lived container per session runs the driver (``_sandbox/driver.py``) as PID 1; the host
talks to it over the container's attached stdin/stdout (length-prefixed JSON), so a warm call costs
a round trip, not a ``docker exec``. A pool of pre-started containers makes a new session's first
call fast. A timeout kills the container (the work really stops) and the session's next call gets
a fresh kernel. Every part of a call is bounded: waiting for the engine by ``timeout_s``, getting a kernel (a
place, a container start) by ``timeout_s`` plus ``policy.code.queue_timeout_s``, and the code's run by
``timeout_s`` from the moment it is sent.

Modules (each states its own invariants):

* ``_actions``: the ``code.run`` / ``code.reset`` handlers; shaping a reply into output and data.
* ``_models``: the input models and the call's time limit.
* ``_service``: ``CodeService``: the hosts and their warm pools, the sessions' kernels, a failed host
  taken out and back in, reaping, set-id sweeps, cleanup.
* ``_queue``: admission: at most ``settings.code.max_sessions`` live session kernels, a FIFO queue
  within the call's deadline (retryable ``timeout`` with the position when it passes).
* ``_kernel``: one session's kernel: claiming it for a call (replacing it when dead, out of step
  or unable to hide new denied paths) and running a call on it.
* ``_channel``: the host side of the protocol: attach framing, bounded reads, request ids, reply checks.
* ``_container``: the engine connection and the container's containment (``config``: the one create
  body, with limits, mounts, labels, the bootstrap, gVisor), orphan removal.
* ``_early``: the first container of a prestarting ``Legs``, asked of the one local engine over its
  unix socket (standard library only) before the rest of ``Legs()`` is built; the service takes it.
* ``_reaper``: removing containers in the background, and none of the process's left at its exit.
* ``_hosts``: the Docker hosts (``settings.code.docker_hosts``): their settings and TLS material,
  the client, health, and placement by load (fewest live sessions per weight).
* ``_fs``: the workspace as the sandbox sees it: who it runs as, denied-path masks, set-id stripping.
* ``_sandbox``: runs INSIDE the container or without agent_legs: the driver (stdlib only) and the
  image recipe (``build.py``, ``Dockerfile``).
* ``_policy`` / ``_settings``: the ``policy.code`` and ``settings.code`` sections.

Threat model: the code in the sandbox is the attacker's (a fully prompt-injected model).
**Escapes**: no network, a non-root user, a read-only root, no capabilities, ``no-new-privileges``,
pids/memory/CPU limits, an empty environment, optionally gVisor (``_container``). **Flooding**: every
read of the channel is bounded and checked, replies are cut to the policy's caps, the containers log
nothing (``_channel``, ``_container``). **Set-id files** never survive on the host: stripped after and
before every call and every 2 s while a kernel lives (``_service``, ``_fs``). **Denied paths**
(``policy.files.deny``) are masked in the container, and a kernel that cannot hide a newly appeared
one is replaced before the code runs (``_fs``, ``_kernel``). **Guarded network** only: one unix socket
to the egress guard's proxy (``_container``). **Dying with the host**: PID 1 ends the container when
the attach connection drops; orphans of dead hosts are removed at start (``_container``). **Remote
engines**: TLS with the configured CA and client certificate only; an engine that stops answering is
taken out and its sessions are told, never silently moved (``_hosts``, ``_service``).
"""
