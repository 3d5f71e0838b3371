"""Agent Legs sandbox driver: a persistent Python namespace behind a length-prefixed JSON protocol.

Runs in the sandbox container, on the container's attached stdin/stdout. Each request is a 4-byte
big-endian length plus a JSON object carrying an ``id``; each response likewise, echoing that id.
The protocol uses private duplicates of the original stdin/stdout: during a call, fds 1/2 are pipes
drained by reader threads (the first ``max_output_bytes`` kept, the rest counted and dropped, so a
flood of output neither fills memory nor fails the code); between calls they point at /dev/null,
so nothing user code (or a thread it left behind) prints lands on the protocol by accident.

Two processes. PID 1 is a supervisor that never runs user code: it forks the kernel (the process
that executes the code and speaks the protocol), keeps only the read end of stdin, makes itself
non-dumpable (code in the kernel, same uid but no capabilities, cannot ptrace it; under runc it
cannot open ``/proc/1/fd`` either) and then only watches:
when the host's end of stdin closes (the host closed the session, or died: the engine closes a
StdinOnce stdin when the attach connection drops), or when the kernel process dies, PID 1 exits and
the kernel of the host machine kills every process left in the container's PID namespace. No
thread, child or busy loop of user code can delay this: the watcher shares no interpreter (no GIL)
with them, and PID 1 of a PID namespace ignores SIGKILL/SIGSTOP sent from inside it.

Threat model: the code is hostile. It runs in the kernel process, so it CAN write on the protocol
channel (forged frames, huge lengths, a reply out of step): the host treats every byte from the
container as untrusted (bounded reads, checked lengths, reply ids, validated fields) and replaces a
kernel that breaks the protocol. The driver bounds its honest replies so the host's caps hold.

A call's processes end with the call: afterwards the kernel kills every other process it may signal
(``kill(-1)`` spares PID 1 and itself) and reaps them (it is their subreaper), so no background job,
fork bomb or zombie outlives it.

When the host grants guarded network (``AGENT_LEGS_EGRESS_SOCKET``), the container still has only
loopback; a forwarder thread listens on ``127.0.0.1:$AGENT_LEGS_EGRESS_PORT`` and relays each
connection to the host's egress proxy over the mounted unix socket (HTTP_PROXY points there).
Standard library only: the image's python3 (3.8 or later: ``posix_spawn``) runs it. Its own modules
never come from the workspace: ``python3 -c`` puts the working directory (``/workspace``) first on
``sys.path``, where a file named ``json.py`` or ``traceback.py`` (the model's, or a hostile one) would
run instead of the standard library's, in PID 1 before the supervisor exists. The driver imports everything it uses with that entry
removed, and gives it back (``serve``) to the code, which imports the workspace's modules as usual.
The one module loaded later, ``traceback`` at the first error, is imported with that same path in place
(``_stdlib``); if the code broke what it needs, the error is reported in plain lines (``_format_error``).

Memory (an idle container is this driver's two processes, charged to the container's cgroup; a page
both processes still share counts once): everything is loaded before the fork, and ``gc.freeze()`` right
before it keeps either process's collector from writing to (and so copying) the pages they share; the
kernel loads nothing an idle kernel does not use: the protocol's JSON through ``_json`` (not the ``json``
package, which imports ``re`` and ``enum``), bash through ``posix_spawn`` (not ``subprocess``), threads
through ``_thread``, the cell's parse through ``_ast``, ``socket`` only for guarded network. Measured: an
idle container after one call 9.5 -> 5.9 MB. The code's own imports of those modules load them as usual.
"""

import sys  # (built in: already loaded, no file can stand in for it)

_CWD_FIRST = bool(sys.path) and sys.path[0] == ""  # python3 -c: the working directory
if _CWD_FIRST:
    del sys.path[0]

import _ast  # noqa: E402 (each after the working directory left sys.path; _ast, _signal, _thread: built in)
import _signal  # noqa: E402
import _thread  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

_OWN_PATH = list(sys.path)  # the standard library's places, without the working directory

WORKSPACE = "/workspace"
MAX_SCAN = 5000
MAX_LISTED = 100  # changed paths and figures named in one reply (the host shows at most 100 artifacts)
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
# cgroup v2, then v1: the kernel's count of OOM kills in this container's memory cgroup
OOM_FILES = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
# bash children volunteer to be the OOM killer's first choice, so the kernel (PID 1) survives them
BASH_PRELUDE = 'cd /workspace || exit 126; echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec /bin/bash -c "$1"'


def _codec():
    """JSON on the protocol: the C accelerator's scanner and encoder when the image has them (the
    ``json`` package would import ``re`` and ``enum``: ~0.6 MB of every kernel), else the ``json`` package."""
    try:
        import _json

        class _Context:  # what json.JSONDecoder() gives the scanner
            strict = True
            object_hook = object_pairs_hook = None
            parse_float, parse_int = float, int
            parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__

        def dumps(obj):  # json.dumps(obj, default=repr): ASCII, ", " and ": ", NaN allowed, cycles detected
            return "".join(
                _json.make_encoder({}, repr, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)(obj, 0)
            )

        def loads(text):
            text = text.decode("utf-8")
            obj, end = _json.make_scanner(_Context())(text, len(text) - len(text.lstrip()))
            if text[end:].strip():
                raise ValueError("extra data after the request")
            return obj

        probe = {"probe": [1, 2.5, "\u00e9\n", None, True, {"k": []}]}
        text = dumps(probe)
        if text != '{"probe": [1, 2.5, "\\u00e9\\n", null, true, {"k": []}]}' or loads(text.encode()) != probe:
            raise ValueError("the accelerator does not speak json.dumps/json.loads")
        return dumps, loads
    except Exception:  # no accelerator (or another one): the package, whatever it costs
        import json

        return (lambda obj: json.dumps(obj, default=repr)), json.loads


_dumps, _loads = _codec()


def _read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _send(fd, obj):
    data = _dumps(obj).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


class _Capture:
    """One end of a call's stdout or stderr: a pipe, drained by a thread keeping a bounded head."""

    def __init__(self, limit):
        self.limit = limit
        self.head = bytearray()
        self.total = 0
        self.read_fd, self.write_fd = os.pipe()
        self.done = _thread.allocate_lock()
        self.done.acquire()
        _thread.start_new_thread(self._drain, ())

    def _drain(self):
        try:
            while True:
                chunk = os.read(self.read_fd, 65536)
                if not chunk:
                    break
                self.total += len(chunk)
                room = self.limit - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
        finally:
            os.close(self.read_fd)
            self.done.release()

    def result(self, wait_s):
        if self.done.acquire(timeout=wait_s):  # EOF comes as soon as every writer (all killed by now) is gone
            self.done.release()
        return bytes(self.head).decode("utf-8", "replace"), self.total


def _relay(src, dst, shut_wr):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(shut_wr)
        except OSError:
            pass


def _bridge(socket, conn, path):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        conn.close()
        upstream.close()
        return
    back = _thread.allocate_lock()
    back.acquire()

    def backward():
        try:
            _relay(upstream, conn, socket.SHUT_WR)
        finally:
            back.release()

    _thread.start_new_thread(backward, ())
    _relay(conn, upstream, socket.SHUT_WR)
    back.acquire()
    conn.close()
    upstream.close()


def start_egress_forwarder(path, port):
    """127.0.0.1:port inside the container -> the host's egress proxy (unix socket). Called before the
    working directory is back on sys.path (``serve``); a kernel without guarded network never loads ``socket``."""
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(128)

    def accept():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            _thread.start_new_thread(_bridge, (socket, conn, path))

    _thread.start_new_thread(accept, ())


def _load_prctl():
    """libc's prctl, loaded before the fork (both processes share its pages), or None without ctypes."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except Exception:  # no ctypes in this image: the supervisor still works, only less shielded
        return None


_PRCTL = [None]


def _prctl(option, value):
    if _PRCTL[0] is not None:
        _PRCTL[0](option, value, 0, 0, 0)


def supervise(kernel_pid, host_fd):
    """PID 1: exit (ending the whole container) when the host goes away or the kernel dies."""
    _prctl(PR_SET_DUMPABLE, 0)
    _signal.signal(_signal.SIGTERM, lambda *a: os._exit(0))  # PID 1 has no default action: stop when asked
    poller = select.poll()
    poller.register(host_fd, select.POLLERR)  # POLLHUP is always reported; POLLIN is not asked for
    while True:
        for _, events in poller.poll(250):
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                os._exit(0)  # the host is gone: the namespace's processes all die with PID 1
        while True:  # reap what is reparented to us; the kernel's death ends the container
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                os._exit(0)
            if pid == 0:
                break
            if pid == kernel_pid:
                os._exit(0)


def _oom_kills():
    for path in OOM_FILES:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def _kill_strays(budget_s=2.0):
    """Kill and reap every process but this one (PID 1 of the container's PID namespace)."""
    deadline = time.monotonic() + budget_s
    killed = 0
    while True:
        try:
            os.kill(-1, _signal.SIGKILL)  # everything we may signal, except ourselves
            found = True
        except ProcessLookupError:
            found = False
        except PermissionError:
            found = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            killed += 1
        if not found or time.monotonic() > deadline:
            return killed
        time.sleep(0.0005)


def _stdlib(name):
    """A standard-library module the driver needs only after code ran (``traceback``, at the first error:
    ~0.75 MB with ``re`` and ``enum``, which an idle kernel never needs). It is imported with the driver's
    own ``sys.path`` in place, whatever the code did to it, so a workspace file named like it or like a
    module it imports does not stand in for it (a module the code itself imported under such a name is
    the code's business: ``_format_error`` then falls back to its own lines)."""
    module = _LATE.get(name)
    if module is None:
        saved = sys.path[:]
        sys.path[:] = _OWN_PATH
        try:
            __import__(name)
            module = _LATE[name] = sys.modules[name]
        finally:
            sys.path[:] = saved
    return module


_LATE = {}


def _format_error(etype, value, tb):
    try:
        return "".join(_stdlib("traceback").format_exception(etype, value, tb))
    except BaseException:  # the code broke what traceback needs: the frames and the exception, plainly
        lines = ["Traceback (most recent call last):\n"] if tb is not None else []
        while tb is not None:
            code = tb.tb_frame.f_code
            lines.append('  File "%s", line %s, in %s\n' % (code.co_filename, tb.tb_lineno, code.co_name))
            tb = tb.tb_next
        try:
            text = str(value)
        except BaseException:
            text = "<exception str() failed>"
        lines.append("%s: %s\n" % (etype.__name__, text) if text else "%s\n" % etype.__name__)
        return "".join(lines)


def _run_bash(code):
    """bash -c CODE in the workspace, stdin /dev/null, on the call's fds 1/2; its exit code (-N: signal N).
    posix_spawn, not ``subprocess`` (~0.5 MB of every kernel): the driver's fds are all close-on-exec."""
    pid = os.posix_spawn(
        "/bin/bash",
        ["/bin/bash", "-c", BASH_PRELUDE, "bash", code],
        os.environ,
        file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
        setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ),  # as subprocess's restore_signals: Python ignores them
    )
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _snapshot():
    seen = {}
    for root, dirs, files in os.walk(WORKSPACE):
        dirs[:] = [d for d in dirs if not d.startswith(".agent-legs")]
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            seen[os.path.relpath(path, WORKSPACE)] = (st.st_mtime_ns, st.st_size)
            if len(seen) >= MAX_SCAN:
                return seen
    return seen


def _save_figures(stamp):
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    saved = []
    for num in plt.get_fignums():
        rel = "figures/figure-%s-%d.png" % (stamp, num)
        try:
            os.makedirs(os.path.join(WORKSPACE, "figures"), exist_ok=True)
            plt.figure(num).savefig(os.path.join(WORKSPACE, rel), dpi=100, bbox_inches="tight")
            saved.append(rel)
        except Exception as exc:  # a broken figure (or a read-only workspace) must not break the call
            print("figure %d not saved: %s" % (num, exc), file=sys.stderr)
    plt.close("all")
    return saved


def _bounded(text, limit):
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit], True


class Kernel:
    def __init__(self):
        self.ns = {"__name__": "__main__", "__builtins__": __builtins__}
        self.count = 0
        self.token = os.urandom(3).hex()  # figure names stay unique across kernels of a workspace

    def run_python(self, code):
        # dont_inherit: a cell is compiled as by `python3 -c`, without the __future__ flags the driver's own
        # code was compiled with (its host module's `annotations` made a cell's annotations strings)
        tree = compile(code, "<cell>", "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)  # what ast.parse does
        last = None
        if tree.body and isinstance(tree.body[-1], _ast.Expr):
            last = _ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec", dont_inherit=True), self.ns)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval", dont_inherit=True), self.ns)
            if value is not None:
                self.ns["_"] = value
                return repr(value)
        return None


def _text_stream(fd):
    # closefd=False: fds 1/2 are re-pointed (dup2) per call; the stream object stays
    return io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(fd, "w", closefd=False)), encoding="utf-8", errors="backslashreplace", write_through=True
    )


def _flush(stream):
    try:
        stream.flush()
    except Exception:
        pass


def handle(kernel, req, null_fd):
    limit = int(req.get("max_output_bytes", 100000))
    track = req.get("track_files", True)
    before = _snapshot() if track else {}
    oom_before = _oom_kills()
    out, err = _Capture(limit), _Capture(limit)
    os.dup2(out.write_fd, 1)
    os.dup2(err.write_fd, 2)
    os.close(out.write_fd)
    os.close(err.write_fd)
    sys.stdout, sys.stderr = kernel.stdout, kernel.stderr  # undo any redirect left by earlier code
    result = {"value": None, "error": None, "exit_code": None, "figures": []}
    kernel.count += 1
    started = time.monotonic()
    try:
        if req.get("language") == "bash":
            result["exit_code"] = _run_bash(req["code"])
        else:
            result["value"] = kernel.run_python(req["code"])
    except SystemExit as exc:
        result["error"] = "SystemExit: %s" % (exc.code,)
    except BaseException:
        etype, value, tb = sys.exc_info()
        # hide the driver's own frames: the model needs its code's traceback only
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next
        result["error"] = _format_error(etype, value, tb)
    result["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
    if req.get("language") != "bash":
        try:
            result["figures"] = _save_figures("%s-%d" % (kernel.token, kernel.count))
        except BaseException as exc:
            result["figures"] = []
            print("figures not saved: %r" % (exc,), file=sys.stderr)
    _flush(sys.stdout)
    _flush(sys.stderr)
    os.dup2(null_fd, 1)  # our copies of the pipes' write ends are gone: EOF once the children are
    os.dup2(null_fd, 2)
    result["killed_processes"] = _kill_strays()
    result["stdout"], result["stdout_bytes"] = out.result(0.5)
    result["stderr"], result["stderr_bytes"] = err.result(0.5)
    result["value"], result["value_truncated"] = _bounded(result["value"], limit)
    result["error"], _ = _bounded(result["error"], limit)
    result["oom_killed"] = _oom_kills() > oom_before
    result["figures"] = result["figures"][:MAX_LISTED]
    if track:
        after = _snapshot()
        changed = sorted(p for p, sig in after.items() if before.get(p) != sig)
        result["changed"], result["changed_count"] = changed[:MAX_LISTED], len(changed)
    return result


def serve(proto_in, proto_out, null_fd):
    """The kernel: reads requests, runs them, answers each with its id."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of user code are ours to kill and reap
    try:  # the OOM killer takes the kernel before the supervisor (children of bash go first)
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")
    except OSError:
        pass
    os.chdir(WORKSPACE)
    if os.environ.get("AGENT_LEGS_EGRESS_SOCKET"):
        start_egress_forwarder(os.environ["AGENT_LEGS_EGRESS_SOCKET"], int(os.environ["AGENT_LEGS_EGRESS_PORT"]))
    kernel = Kernel()
    kernel.stdout, kernel.stderr = _text_stream(1), _text_stream(2)
    if _CWD_FIRST:  # the code imports from the workspace, as under python3 -c (the driver's modules are loaded)
        sys.path.insert(0, "")
    _send(proto_out, {"ready": True, "python": sys.version.split()[0], "pid": os.getpid()})
    # from here on stray writes (threads left by user code) go nowhere rather than into the protocol
    os.dup2(null_fd, 1)
    os.dup2(null_fd, 2)
    sys.stdout, sys.stderr = kernel.stdout, kernel.stderr
    while True:
        try:
            (size,) = struct.unpack(">I", _read_exact(proto_in, 4))
            req = _loads(_read_exact(proto_in, size))
        except EOFError:
            os._exit(0)  # the host is gone; never wait for threads user code left running
        try:
            result = handle(kernel, req, null_fd)
        except BaseException as exc:  # the driver itself failed: say so rather than hang the host
            result = {"driver_error": ("%s: %s" % (type(exc).__name__, exc))[:2000]}
        result["id"] = req.get("id")
        _send(proto_out, result)


def main():
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    null_fd = os.open(os.devnull, os.O_RDWR)
    os.dup2(null_fd, 0)  # user code reading stdin gets EOF, not our protocol
    _PRCTL[0] = _load_prctl()
    # every object so far leaves the collector's reach: a collection in either process would write to
    # each one's header and copy its page, so the pages stay shared (charged once to the container)
    gc.freeze()
    kernel_pid = os.fork()
    if kernel_pid == 0:
        serve(proto_in, proto_out, null_fd)
        os._exit(0)
    # PID 1 keeps only the host's end of stdin (to see it close) and nothing the kernel could use
    os.dup2(null_fd, 1)
    os.dup2(null_fd, 2)
    os.close(proto_out)
    supervise(kernel_pid, proto_in)


if __name__ == "__main__":
    main()
